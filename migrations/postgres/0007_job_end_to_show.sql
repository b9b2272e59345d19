-- Whether a member's ended job still has to show its end in the member's message (as SQLite's
-- 0010). The end is committed before it is written to Discord, so a crash between the two, a write
-- Discord kept refusing, or an announcement (JOB_TOLD_TOPIC) the following process missed would
-- leave the message at its last progress for good: ending a member's job (not the HTTP API's)
-- sets this, the bot clears it once the message shows the end (JobStore.mark_final_shown), and
-- looks again for the jobs where it is still set (JobStore.final_not_shown).
--
-- false for every existing row (a constant default: no rewrite of the table) and for rows a process
-- of an earlier version ends (its pixverse_release call names no final_pending): a job an older
-- process ended and showed is never told twice while processes are upgraded one at a time.
ALTER TABLE jobs ADD COLUMN final_pending BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE jobs ADD CONSTRAINT jobs_final_pending_when_done CHECK (NOT final_pending OR state = 'done');

-- The ended members' jobs whose message does not show the end yet: a handful at any time (a job
-- leaves the index once its end is shown).
CREATE INDEX jobs_final_pending ON jobs (updated_at) WHERE final_pending;

-- As 0003's, and final_pending when p_fields names it (a member's job, not the HTTP API's): the
-- call of a process of an earlier version names nothing new and leaves it false.
-- Ends a job and frees its slot, exactly once: only while it holds its slot or waits (and, with
-- p_version, only at that version). Under its server's lock, so that a job queued at the same
-- moment is either seen waiting here (others_waiting: the caller promotes it) or sees this slot
-- free and takes it: never both missed. p_fields sets the result columns it names.
CREATE OR REPLACE FUNCTION pixverse_release(
    p_job_id TEXT, p_version INTEGER, p_status TEXT, p_now DOUBLE PRECISION, p_fields JSONB
) RETURNS TABLE (released jobs, others_waiting BOOLEAN) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    server TEXT;
BEGIN
    SELECT guild_id INTO server FROM jobs WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(server, 0));
    RETURN QUERY
    WITH ended AS (
        UPDATE jobs SET
            status = p_status, state = 'done', owner = NULL, updated_at = p_now,
            pixverse_open = CASE WHEN p_fields ? 'pixverse_open' THEN (p_fields ->> 'pixverse_open')::boolean
                                 ELSE pixverse_open END,
            message_id = CASE WHEN p_fields ? 'message_id' THEN p_fields ->> 'message_id' ELSE message_id END,
            content = CASE WHEN p_fields ? 'content' THEN p_fields ->> 'content' ELSE content END,
            attachments = CASE WHEN p_fields ? 'attachments' THEN p_fields ->> 'attachments' ELSE attachments END,
            buttons = CASE WHEN p_fields ? 'buttons' THEN p_fields ->> 'buttons' ELSE buttons END,
            error = CASE WHEN p_fields ? 'error' THEN p_fields ->> 'error' ELSE error END,
            error_details = CASE WHEN p_fields ? 'error_details' THEN p_fields ->> 'error_details'
                                 ELSE error_details END,
            message_timestamp = CASE WHEN p_fields ? 'message_timestamp' THEN p_fields ->> 'message_timestamp'
                                     ELSE message_timestamp END,
            embeds = CASE WHEN p_fields ? 'embeds' THEN p_fields ->> 'embeds' ELSE embeds END,
            final_pending = CASE WHEN p_fields ? 'final_pending'
                                 THEN (p_fields ->> 'final_pending')::boolean AND request_channel_id <> 'api'
                                 ELSE final_pending END
        WHERE job_id = p_job_id AND state <> 'done' AND (p_version IS NULL OR version = p_version)
        RETURNING *
    )
    SELECT ROW(e.*)::jobs, EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = server AND w.queued) FROM ended e;
END
$$;
