-- Whether the member's message of an ended job shows its final state. The final state is written
-- to Discord after the store says the job ended, so a crash between the two, a write Discord kept
-- refusing, or (several processes) an announcement the following process missed would leave the
-- message at its last progress for good: the bot looks again, until this is 1, for the ended jobs
-- of Discord members (JobStore.final_not_shown) and marks each once its message shows the end
-- (JobStore.mark_final_shown).
--
-- 0 for every job until it ended and its message showed it; jobs that ended before this version
-- count as shown (their messages are history). Added in place, as 0008's columns.
ALTER TABLE jobs ADD COLUMN final_shown INTEGER NOT NULL DEFAULT 0
    CHECK (final_shown IN (0, 1))
    CONSTRAINT jobs_final_shown_when_done
    CHECK (final_shown = 0 OR state = 'done');
UPDATE jobs SET final_shown = 1 WHERE state = 'done';

-- The ended members' jobs whose message does not show the end yet: a handful at any time (a job
-- leaves the index when its end is shown; HTTP API jobs have no message and never enter it).
CREATE INDEX jobs_final_not_shown ON jobs (updated_at)
    WHERE state = 'done' AND final_shown = 0 AND request_channel_id <> 'api';
