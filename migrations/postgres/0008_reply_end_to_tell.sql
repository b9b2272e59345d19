-- The HTTP API's jobs with a replyUrl have their end to tell too (as SQLite's release does): the
-- final state is POSTed there after a crash, or after the receiver was down for the live path's
-- few tries, as a member's message gets its end (0007). The replyUrl poster marks it told once the
-- receiver took it or refused it for good (JobStore.mark_final_shown).
--
-- Set for such a job only when p_fields names final_reply: a process of the previous version
-- names final_pending alone and posts the end itself without recording it, so while processes are
-- upgraded one at a time no upgraded process finds those ends and posts them a second time.
-- The rest is 0007's function, unchanged (PostgreSQL replaces a function whole).
--
-- A process of the previous version looking for ends to tell (its JobStore.final_not_shown) finds
-- these too, and POSTs them without recording them: during a rolling upgrade a receiver may get a
-- final state more than once, as replyUrl's delivery (at least once) allows.

-- Whether a job's parameters name a replyUrl. Parameters jsonb cannot hold (a \u0000 in a prompt
-- stored before such text was refused) must not stop the job from ending: their end is not told again.
CREATE OR REPLACE FUNCTION pixverse_has_reply_url(p_params TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN COALESCE(p_params::jsonb ->> 'replyUrl', '') <> '';
EXCEPTION WHEN untranslatable_character OR invalid_text_representation THEN
    RETURN FALSE;
END
$$;

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
            final_pending = CASE
                WHEN request_channel_id <> 'api' THEN CASE WHEN p_fields ? 'final_pending'
                                                           THEN (p_fields ->> 'final_pending')::boolean
                                                           ELSE final_pending END
                WHEN p_fields ? 'final_reply' THEN (p_fields ->> 'final_reply')::boolean
                                                   AND pixverse_has_reply_url(params)
                ELSE final_pending END
        WHERE job_id = p_job_id AND state <> 'done' AND (p_version IS NULL OR version = p_version)
        RETURNING *
    )
    SELECT ROW(e.*)::jobs, EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = server AND w.queued) FROM ended e;
END
$$;
