-- Placement of a new job in one round trip. Each function takes its server's transaction-scoped
-- advisory lock, then counts and inserts in a statement of its own: in a PL/pgSQL function under
-- READ COMMITTED each statement reads what was committed before it started, so it sees every
-- placement that held the lock before this one (bot/store/postgres/jobs.py explains the guard).
-- Called alone (autocommit), the lock is held until that statement's transaction commits.
--
-- Nothing is inserted (no row returned) when no account of the server is in rotation with a
-- free slot, or when jobs of the server wait (they go first): the caller then decides, under
-- the same lock, between a refusal and the queue.

-- A new job on a random account of its server with a free slot: p_pick in [0, 1) chooses
-- uniformly among them.
CREATE FUNCTION pixverse_place_free(
    p_job_id TEXT, p_guild TEXT, p_requester TEXT, p_asked_in TEXT, p_verb TEXT, p_params TEXT,
    p_parent TEXT, p_owner TEXT, p_now DOUBLE PRECISION, p_pick DOUBLE PRECISION
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
END
$$;

-- A follow-up job (a button) on one given account while it is in rotation with a free slot.
CREATE FUNCTION pixverse_place_on_free(
    p_job_id TEXT, p_guild TEXT, p_requester TEXT, p_asked_in TEXT, p_verb TEXT, p_params TEXT,
    p_parent TEXT, p_owner TEXT, p_now DOUBLE PRECISION, p_account TEXT
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
END
$$;
