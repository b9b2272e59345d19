-- animate and meme_face, and what a job keeps of PixVerse's last message (as SQLite's 0006).
--
-- jobs.verb admits the two commands that take an image; two columns keep the useapi job model's
-- timestamp and embeds; pixverse_release sets them too.
--
-- job_images keeps an image's bytes beside its job while the job lives: a queued job, a job moved
-- to another account, or a job taken over by another process can still send it. The trigger
-- deletes them the moment the job ends, whichever path ends it; purging a job deletes them too.

ALTER TABLE jobs DROP CONSTRAINT jobs_verb_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_verb_check
    CHECK (verb IN ('create', 'create_single', 'animate', 'meme_face', 'button'));
ALTER TABLE jobs ADD COLUMN message_timestamp TEXT;  -- Discord's ISO text
ALTER TABLE jobs ADD COLUMN embeds TEXT;             -- JSON

CREATE TABLE job_images (
    job_id   TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    param    TEXT NOT NULL,    -- the catalogue's parameter: image, face
    filename TEXT NOT NULL,
    data     BYTEA NOT NULL CHECK (length(data) > 0),
    PRIMARY KEY (job_id, param)
);

CREATE FUNCTION pixverse_forget_images() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_images WHERE job_id = NEW.job_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_images_end AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'done' AND OLD.state <> 'done') EXECUTE FUNCTION pixverse_forget_images();

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
            embeds = CASE WHEN p_fields ? 'embeds' THEN p_fields ->> 'embeds' ELSE embeds END
        WHERE job_id = p_job_id AND state <> 'done' AND (p_version IS NULL OR version = p_version)
        RETURNING *
    )
    SELECT ROW(e.*)::jobs, EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = server AND w.queued) FROM ended e;
END
$$;
