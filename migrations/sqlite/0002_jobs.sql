-- Accounts can leave the rotation (a dead token, a block, repeated failures) and come back.
ALTER TABLE accounts ADD COLUMN in_rotation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE accounts ADD COLUMN error TEXT;
ALTER TABLE accounts ADD COLUMN error_details TEXT;
ALTER TABLE accounts ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;

-- PixVerse jobs. A job holds one slot of its account while slot_held = 1; capacity is
-- the count of such rows, so it is never stored twice and cannot drift. Releasing is an
-- UPDATE ... WHERE slot_held = 1, which succeeds exactly once however many paths race.
CREATE TABLE jobs (
    seq                INTEGER PRIMARY KEY,  -- submission order (queue, matching); only old rows are deleted
    job_id             TEXT NOT NULL UNIQUE,
    guild_id           TEXT NOT NULL,
    account_channel_id TEXT,              -- NULL while waiting in the queue
    account_user_id    TEXT,
    max_jobs           INTEGER,           -- the account's maxJobs when placed (a useapi job field)
    requester_id       TEXT NOT NULL,
    request_channel_id TEXT NOT NULL,     -- where the member asked; updates go there after 15 min
    verb               TEXT NOT NULL,     -- create, create_single, button
    params             TEXT NOT NULL,     -- JSON of the request
    parent_job_id      TEXT,              -- button jobs: the job whose result was pressed
    status             TEXT NOT NULL,
    slot_held          INTEGER NOT NULL DEFAULT 0,
    queued             INTEGER NOT NULL DEFAULT 0,
    owner              TEXT,              -- the process running it (see processes)
    placement_attempts INTEGER NOT NULL DEFAULT 0,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    submitted_at       REAL,              -- sent to PixVerse; the timeout counts from here
    pixverse_open      INTEGER NOT NULL DEFAULT 0,  -- PixVerse may still post for it (ended early or not)
    message_id         TEXT,
    progress           INTEGER,
    content            TEXT,
    attachments        TEXT,              -- JSON
    buttons            TEXT,              -- JSON
    error              TEXT,
    error_details      TEXT
);

-- Partial indexes: they hold only the few live rows, so placement stays as fast with a
-- month of finished jobs behind it, and finished rows cost them nothing.
CREATE INDEX jobs_slots ON jobs (account_channel_id) WHERE slot_held = 1;
CREATE INDEX jobs_holding ON jobs (guild_id, seq) WHERE slot_held = 1;
CREATE INDEX jobs_queue ON jobs (guild_id, seq) WHERE queued = 1;
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_open ON jobs (account_channel_id, seq) WHERE pixverse_open = 1;

-- Which job each PixVerse message belongs to, once attributed: an edit or a replay of a
-- message then goes to the same job, never to another job with the same prompt.
CREATE TABLE pixverse_messages (
    message_id TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE
);

CREATE INDEX pixverse_messages_job ON pixverse_messages (job_id);

-- Leases of running bot processes: a job whose owner stopped renewing is recovered.
CREATE TABLE processes (
    owner        TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
