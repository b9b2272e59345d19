-- Placement and release of a job in one round trip each. Each function takes its server's transaction-scoped
-- advisory lock, then counts and inserts in a statement of its own: in a PL/pgSQL function under
-- READ COMMITTED each statement reads what was committed before it started, so it sees every
-- placement that held the lock before this one (bot/store/postgres/jobs.py explains the guard).
-- Called alone (autocommit), the lock is held until that statement's transaction commits.
--
-- Nothing is inserted (no row returned) when no account of the server is in rotation with a
-- free slot, or when jobs of the server wait (they go first): the caller then decides, under
-- the same lock, between a refusal and the queue. A job placed with no owner (its server's shard
-- runs in another process) is announced on p_announce (NOTIFY is delivered at commit).

-- A new job on a random account of its server with a free slot: p_pick in [0, 1) chooses
-- uniformly among them.
CREATE FUNCTION pixverse_place_free(
    p_job_id TEXT, p_guild TEXT, p_requester TEXT, p_asked_in TEXT, p_verb TEXT, p_params TEXT,
    p_parent TEXT, p_owner TEXT, p_now DOUBLE PRECISION, p_pick DOUBLE PRECISION, p_announce TEXT
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_guild, 0));
    RETURN QUERY
    WITH free AS (
        SELECT a.channel_id, a.discord_user_id, a.max_jobs,
               ROW_NUMBER() OVER (ORDER BY a.channel_id) - 1 AS n, COUNT(*) OVER () AS total
        FROM accounts a
        WHERE a.guild_id = p_guild AND a.in_rotation
          AND (SELECT COUNT(*) FROM jobs j WHERE j.account_channel_id = a.channel_id AND j.slot_held) < a.max_jobs
          AND NOT EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = p_guild AND w.queued)
    ), placed AS (
        INSERT INTO jobs (job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,
                          request_channel_id, verb, params, parent_job_id, status, state, owner, created_at, updated_at)
        SELECT p_job_id, p_guild, channel_id, discord_user_id, max_jobs, p_requester, p_asked_in, p_verb, p_params,
               p_parent, 'created', 'placed', p_owner, p_now, p_now
        FROM free WHERE n = floor(p_pick * total)
        RETURNING *
    )
    SELECT * FROM placed;
    IF FOUND AND p_announce IS NOT NULL THEN
        PERFORM pg_notify(p_announce, p_guild);
    END IF;
END
$$;

-- A follow-up job (a button) on one given account while it is in rotation with a free slot.
CREATE FUNCTION pixverse_place_on_free(
    p_job_id TEXT, p_guild TEXT, p_requester TEXT, p_asked_in TEXT, p_verb TEXT, p_params TEXT,
    p_parent TEXT, p_owner TEXT, p_now DOUBLE PRECISION, p_account TEXT, p_announce TEXT
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_guild, 0));
    RETURN QUERY
    WITH placed AS (
        INSERT INTO jobs (job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,
                          request_channel_id, verb, params, parent_job_id, status, state, owner, created_at, updated_at)
        SELECT p_job_id, p_guild, a.channel_id, a.discord_user_id, a.max_jobs, p_requester, p_asked_in, p_verb,
               p_params, p_parent, 'created', 'placed', p_owner, p_now, p_now
        FROM accounts a
        WHERE a.guild_id = p_guild AND a.channel_id = p_account AND a.in_rotation
          AND (SELECT COUNT(*) FROM jobs j WHERE j.account_channel_id = a.channel_id AND j.slot_held) < a.max_jobs
        RETURNING *
    )
    SELECT * FROM placed;
    IF FOUND AND p_announce IS NOT NULL THEN
        PERFORM pg_notify(p_announce, p_guild);
    END IF;
END
$$;

-- Ends a job and frees its slot, exactly once: only while it holds its slot or waits (and, with
-- p_version, only at that version). Under its server's lock, so that a job queued at the same
-- moment is either seen waiting here (others_waiting: the caller promotes it) or sees this slot
-- free and takes it: never both missed. p_fields sets the result columns it names.
CREATE FUNCTION pixverse_release(
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
                                 ELSE error_details END
        WHERE job_id = p_job_id AND state <> 'done' AND (p_version IS NULL OR version = p_version)
        RETURNING *
    )
    SELECT ROW(e.*)::jobs, EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = server AND w.queued) FROM ended e;
END
$$;
