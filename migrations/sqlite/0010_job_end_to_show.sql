-- Whether a member's ended job still has to show its end in the member's message. The end is
-- committed before it is written to Discord, so a crash between the two, a write Discord kept
-- refusing, or (several processes) an announcement the following process missed would leave the
-- message at its last progress for good: ending a member's job (not the HTTP API's) sets this to
-- 1, the bot clears it once the message shows the end (JobStore.mark_final_shown), and looks
-- again for the jobs where it is still 1 (JobStore.final_not_shown).
--
-- 0 for every existing row and for rows a process of an earlier version writes (it sets nothing
-- here): a job an older process ended and showed is never told twice while processes are upgraded
-- one at a time. Added in place, as 0008's columns.
ALTER TABLE jobs ADD COLUMN final_pending INTEGER NOT NULL DEFAULT 0
    CHECK (final_pending IN (0, 1))
    CONSTRAINT jobs_final_pending_when_done
    CHECK (final_pending = 0 OR state = 'done');

-- The ended members' jobs whose message does not show the end yet: a handful at any time (a job
-- leaves the index once its end is shown).
CREATE INDEX jobs_final_pending ON jobs (updated_at) WHERE final_pending = 1;
