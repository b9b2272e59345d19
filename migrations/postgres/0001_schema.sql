-- The whole schema on PostgreSQL, as SQLite's five migrations leave it (migrations/sqlite/).
--
-- Timestamps are seconds since the Unix epoch (UTC) in DOUBLE PRECISION, as the store port
-- passes them; booleans are booleans. A job's place is one value of the job_state enum; the
-- columns slot_held and queued are generated from it (never written, so they cannot disagree
-- with it), and CHECK constraints tie the account, the owner and the submission time to it.
-- Capacity itself is guarded by the placement transactions (bot/store/postgres/jobs.py):
-- each takes a transaction-scoped advisory lock on its server before it counts.

-- Key/value facts about this database: the token key check, the synced command fingerprint.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One PixVerse account configuration per Discord channel (the useapi account/<channel>).
-- The token is stored only encrypted (Fernet) plus a keyed hash (HMAC-SHA256), so the "same
-- discord value" rule is an index lookup, not a decryption of every row.
CREATE TABLE accounts (
    channel_id           TEXT PRIMARY KEY,
    guild_id             TEXT NOT NULL,
    token_encrypted      BYTEA NOT NULL,
    token_hash           TEXT NOT NULL UNIQUE,
    token_last4          TEXT NOT NULL,
    discord_user_id      TEXT NOT NULL UNIQUE,
    max_jobs             INTEGER NOT NULL CHECK (max_jobs >= 1),
    created_at           DOUBLE PRECISION NOT NULL,
    updated_at           DOUBLE PRECISION NOT NULL,
    in_rotation          BOOLEAN NOT NULL DEFAULT TRUE,
    error                TEXT,
    error_details        TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0)
);
CREATE INDEX accounts_guild ON accounts (guild_id);

-- Leases of running bot processes: a job whose owner stopped renewing is recovered.
CREATE TABLE processes (
    owner        TEXT PRIMARY KEY,
    heartbeat_at DOUBLE PRECISION NOT NULL
);

-- waiting: for a slot, in the server's queue; placed: holds a slot of its account, not yet
-- sent to PixVerse; submitted: sent, PixVerse works on it; done: ended (status says how).
CREATE TYPE job_state AS ENUM ('waiting', 'placed', 'submitted', 'done');

CREATE TABLE jobs (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- submission order (queue, matching)
    job_id             TEXT NOT NULL UNIQUE,
    guild_id           TEXT NOT NULL,
    state              job_state NOT NULL,
    slot_held          BOOLEAN GENERATED ALWAYS AS (state IN ('placed', 'submitted')) STORED,
    queued             BOOLEAN GENERATED ALWAYS AS (state = 'waiting') STORED,
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
    created_at         DOUBLE PRECISION NOT NULL,
    updated_at         DOUBLE PRECISION NOT NULL,
    submitted_at       DOUBLE PRECISION,  -- sent to PixVerse; the timeout counts from here
    pixverse_open      BOOLEAN NOT NULL DEFAULT FALSE,  -- PixVerse may still post for it
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
    CHECK (NOT pixverse_open OR (submitted_at IS NOT NULL AND account_channel_id IS NOT NULL))
);

-- Partial indexes: they hold only the few live rows, so placement and the periodic work stay as
-- fast with a month of finished jobs behind them.
CREATE INDEX jobs_slots ON jobs (account_channel_id) WHERE slot_held;
CREATE INDEX jobs_holding ON jobs (guild_id, seq) WHERE slot_held;
CREATE INDEX jobs_queue ON jobs (guild_id, seq) WHERE queued;
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_open ON jobs (account_channel_id, seq) WHERE pixverse_open;
CREATE INDEX jobs_live_by_seq ON jobs (seq) WHERE slot_held;
CREATE INDEX jobs_waiting_by_seq ON jobs (seq) WHERE queued;
CREATE INDEX jobs_owner ON jobs (owner) WHERE owner IS NOT NULL;  -- ON DELETE SET NULL finds them

-- Which job each PixVerse message belongs to, once attributed: an edit or a replay of a
-- message then goes to the same job, never to another job with the same prompt.
CREATE TABLE pixverse_messages (
    message_id TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE
);
CREATE INDEX pixverse_messages_job ON pixverse_messages (job_id);

-- HTTP API tokens. One belongs to one Discord server; only a hash is kept, the token is shown
-- once when created. A revoked token stays (revoked_at set) so its use is a clean 401.
CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    guild_id    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);
CREATE INDEX api_tokens_guild ON api_tokens (guild_id) WHERE revoked_at IS NULL;
