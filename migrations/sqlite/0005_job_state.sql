-- Job state the database guards, and one timestamp type in every table.
--
-- A job's place was seven columns whose rules lived only in UPDATE statements. Now one
-- column, state, says where a job is; slot_held and queued are derived from it (never
-- written, so they cannot disagree with it), and CHECK constraints tie the account, the
-- owner and the submission time to it. version is bumped each time a job is put on an
-- account, for compare-and-set. owner is a foreign key to the process leases: a forgotten
-- process leaves its jobs with no owner, which recovery takes over. Timestamps are REAL
-- seconds since the Unix epoch (UTC) everywhere; the ISO texts of accounts, API tokens and
-- migrations are converted.
--
-- SQLite cannot change a column's type or constraints in place: each table is rebuilt and
-- its rows copied. pixverse_messages goes first and comes back last, so dropping the old
-- jobs table cannot cascade into it.

CREATE TEMP TABLE pixverse_messages_copy AS SELECT message_id, job_id FROM pixverse_messages;
DROP TABLE pixverse_messages;

CREATE TABLE jobs_new (
    seq                INTEGER PRIMARY KEY,  -- submission order (queue, matching); only old rows are deleted
    job_id             TEXT NOT NULL UNIQUE,
    guild_id           TEXT NOT NULL,
    -- waiting: for a slot, in the server's queue; placed: holds a slot of its account, not yet
    -- sent to PixVerse; submitted: sent, PixVerse works on it; done: ended (status says how).
    state              TEXT NOT NULL CHECK (state IN ('waiting', 'placed', 'submitted', 'done')),
    slot_held          INTEGER GENERATED ALWAYS AS (state IN ('placed', 'submitted')) VIRTUAL,
    queued             INTEGER GENERATED ALWAYS AS (state = 'waiting') VIRTUAL,
    version            INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),  -- +1 each time it is put on an account
    status             TEXT NOT NULL CHECK (status IN
                           ('created', 'started', 'progress', 'completed', 'failed', 'moderated', 'cancelled')),
    account_channel_id TEXT,              -- NULL while waiting in the queue
    account_user_id    TEXT,
    max_jobs           INTEGER,           -- the account's maxJobs when placed (a useapi job field)
    requester_id       TEXT NOT NULL,
    request_channel_id TEXT NOT NULL,     -- where the member asked; updates go there after 15 min
    verb               TEXT NOT NULL CHECK (verb IN ('create', 'create_single', 'button')),
    params             TEXT NOT NULL,     -- JSON of the request
    parent_job_id      TEXT,              -- button jobs: the job whose result was pressed
    owner              TEXT REFERENCES processes (owner) ON DELETE SET NULL,  -- the process running it
    placement_attempts INTEGER NOT NULL DEFAULT 0 CHECK (placement_attempts >= 0),
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    submitted_at       REAL,              -- sent to PixVerse; the timeout counts from here
    pixverse_open      INTEGER NOT NULL DEFAULT 0 CHECK (pixverse_open IN (0, 1)),  -- PixVerse may still post for it
    message_id         TEXT,
    progress           INTEGER,
    content            TEXT,
    attachments        TEXT,              -- JSON
    buttons            TEXT,              -- JSON
    error              TEXT,
    error_details      TEXT,
    -- Only a job holding a slot has an owner (the process running it).
    CHECK (owner IS NULL OR state IN ('placed', 'submitted')),
    -- A waiting job has no account, no owner, was never sent, and is only created.
    CHECK (state <> 'waiting' OR (account_channel_id IS NULL AND owner IS NULL AND submitted_at IS NULL
                                  AND status = 'created')),
    -- A job holding a slot has its account; it was sent exactly when it is submitted.
    CHECK (state NOT IN ('placed', 'submitted') OR (account_channel_id IS NOT NULL AND account_user_id IS NOT NULL
                                                    AND max_jobs IS NOT NULL)),
    CHECK (state <> 'placed' OR (submitted_at IS NULL AND status = 'created')),
    CHECK (state <> 'submitted' OR submitted_at IS NOT NULL),
    -- Ended exactly when its status is final.
    CHECK ((state = 'done') = (status IN ('completed', 'failed', 'moderated', 'cancelled'))),
    -- Only a job that was sent can still hear from PixVerse.
    CHECK (pixverse_open = 0 OR (submitted_at IS NOT NULL AND account_channel_id IS NOT NULL))
);

INSERT INTO jobs_new (seq, job_id, guild_id, state, version, status, account_channel_id, account_user_id, max_jobs,
                      requester_id, request_channel_id, verb, params, parent_job_id, owner, placement_attempts,
                      created_at, updated_at, submitted_at, pixverse_open, message_id, progress, content, attachments,
                      buttons, error, error_details)
SELECT seq, job_id, guild_id, state,
       placement_attempts + 1,
       -- A row left ended but not final by an older version would break the rule above: failed.
       CASE WHEN state = 'done' AND status NOT IN ('completed', 'failed', 'moderated', 'cancelled') THEN 'failed'
            WHEN state IN ('waiting', 'placed') THEN 'created'
            ELSE status END,
       CASE WHEN state = 'waiting' THEN NULL ELSE account_channel_id END,
       account_user_id, max_jobs, requester_id, request_channel_id, verb, params, parent_job_id,
       -- Only live jobs name a process, and only one whose lease is still there.
       CASE WHEN state IN ('placed', 'submitted') AND owner IN (SELECT owner FROM processes) THEN owner END,
       placement_attempts, created_at, updated_at,
       CASE WHEN state IN ('waiting', 'placed') THEN NULL ELSE submitted_at END,
       CASE WHEN submitted_at IS NOT NULL AND account_channel_id IS NOT NULL THEN pixverse_open ELSE 0 END,
       message_id, progress, content, attachments, buttons, error, error_details
FROM (SELECT *, CASE WHEN slot_held = 1 AND submitted_at IS NOT NULL THEN 'submitted'
                     WHEN slot_held = 1 THEN 'placed'
                     WHEN queued = 1 THEN 'waiting'
                     ELSE 'done' END AS state
      FROM jobs);

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

-- Partial indexes: they hold only the few live rows, so placement and the periodic work stay as
-- fast with a month of finished jobs behind them (see 0002 and 0004).
CREATE INDEX jobs_slots ON jobs (account_channel_id) WHERE slot_held = 1;
CREATE INDEX jobs_holding ON jobs (guild_id, seq) WHERE slot_held = 1;
CREATE INDEX jobs_queue ON jobs (guild_id, seq) WHERE queued = 1;
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_open ON jobs (account_channel_id, seq) WHERE pixverse_open = 1;
CREATE INDEX jobs_live_by_seq ON jobs (seq) WHERE slot_held = 1;
CREATE INDEX jobs_waiting_by_seq ON jobs (seq) WHERE queued = 1;
CREATE INDEX jobs_owner ON jobs (owner) WHERE owner IS NOT NULL;  -- ON DELETE SET NULL finds them

CREATE TABLE pixverse_messages (
    message_id TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE
);
INSERT INTO pixverse_messages (message_id, job_id)
SELECT message_id, job_id FROM pixverse_messages_copy WHERE job_id IN (SELECT job_id FROM jobs);
DROP TABLE pixverse_messages_copy;
CREATE INDEX pixverse_messages_job ON pixverse_messages (job_id);

CREATE TABLE accounts_new (
    channel_id           TEXT PRIMARY KEY,
    guild_id             TEXT NOT NULL,
    token_encrypted      BLOB NOT NULL,
    token_hash           TEXT NOT NULL UNIQUE,
    token_last4          TEXT NOT NULL,
    discord_user_id      TEXT NOT NULL UNIQUE,
    max_jobs             INTEGER NOT NULL CHECK (max_jobs >= 1),
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    in_rotation          INTEGER NOT NULL DEFAULT 1 CHECK (in_rotation IN (0, 1)),
    error                TEXT,
    error_details        TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0)
);
INSERT INTO accounts_new (channel_id, guild_id, token_encrypted, token_hash, token_last4, discord_user_id, max_jobs,
                          created_at, updated_at, in_rotation, error, error_details, consecutive_failures)
SELECT channel_id, guild_id, token_encrypted, token_hash, token_last4, discord_user_id, max_jobs,
       -- A text SQLite cannot read as a time (none is expected) becomes the time of the upgrade.
       COALESCE((julianday(created_at) - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0),
       COALESCE((julianday(updated_at) - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0),
       in_rotation, error, error_details, consecutive_failures
FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
CREATE INDEX accounts_guild ON accounts (guild_id);

CREATE TABLE api_tokens_new (
    token_hash  TEXT PRIMARY KEY,
    guild_id    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);
INSERT INTO api_tokens_new (token_hash, guild_id, created_by, created_at, revoked_at)
SELECT token_hash, guild_id, created_by,
       COALESCE((julianday(created_at) - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0),
       CASE WHEN revoked_at IS NOT NULL
            THEN COALESCE((julianday(revoked_at) - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0) END
FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
CREATE INDEX api_tokens_guild ON api_tokens (guild_id) WHERE revoked_at IS NULL;

CREATE TABLE schema_migrations_new (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
INSERT INTO schema_migrations_new (version, name, applied_at)
SELECT version, name,
       CASE WHEN typeof(applied_at) = 'text' THEN (julianday(applied_at) - 2440587.5) * 86400.0 ELSE applied_at END
FROM schema_migrations;
DROP TABLE schema_migrations;
ALTER TABLE schema_migrations_new RENAME TO schema_migrations;
