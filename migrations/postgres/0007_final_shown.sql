-- Whether the member's message of an ended job shows its final state (as SQLite's 0010). The final
-- state is written to Discord after the store says the job ended, so a crash between the two, a
-- write Discord kept refusing, or an announcement (JOB_TOLD_TOPIC) the following process missed
-- would leave the message at its last progress for good: the bot looks again, until this is true,
-- for the ended jobs of Discord members (JobStore.final_not_shown) and marks each once its message
-- shows the end (JobStore.mark_final_shown).
--
-- false for every job until it ended and its message showed it; jobs that ended before this
-- version count as shown (their messages are history).
ALTER TABLE jobs ADD COLUMN final_shown BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE jobs SET final_shown = TRUE WHERE state = 'done';
ALTER TABLE jobs ADD CONSTRAINT jobs_final_shown_when_done CHECK (NOT final_shown OR state = 'done');

-- The ended members' jobs whose message does not show the end yet: a handful at any time (a job
-- leaves the index when its end is shown; HTTP API jobs have no message and never enter it).
CREATE INDEX jobs_final_not_shown ON jobs (updated_at)
    WHERE state = 'done' AND NOT final_shown AND request_channel_id <> 'api';
