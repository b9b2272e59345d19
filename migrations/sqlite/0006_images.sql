-- animate and meme_face, and what a job keeps of PixVerse's last message.
--
-- jobs.verb now admits the two commands that take an image. SQLite cannot change a CHECK in
-- place, so the table is rebuilt as 0005 did (pixverse_messages goes first and comes back last).
-- Two columns keep the useapi job model's timestamp and embeds of PixVerse's last message.
--
-- job_images keeps an image's bytes beside its job while the job lives: a queued job, a job moved
-- to another account, or a job taken over after a restart can still send it. The trigger deletes
-- them the moment the job ends, whichever path ends it; purging a job deletes them too (cascade).

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
    verb               TEXT NOT NULL CHECK (verb IN ('create', 'create_single', 'animate', 'meme_face', 'button')),
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
    message_timestamp  TEXT,              -- when PixVerse posted the job's last message (Discord's ISO text)
    embeds             TEXT,              -- JSON: the embeds of that message
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

INSERT INTO jobs_new (seq, job_id, guild_id, state, version, status, account_channel_id, account_user_id, max_jobs, requester_id, request_channel_id, verb, params, parent_job_id, owner, placement_attempts, created_at, updated_at, submitted_at, pixverse_open, message_id, progress, content, attachments, buttons, error, error_details)
SELECT seq, job_id, guild_id, state, version, status, account_channel_id, account_user_id, max_jobs, requester_id, request_channel_id, verb, params, parent_job_id, owner, placement_attempts, created_at, updated_at, submitted_at, pixverse_open, message_id, progress, content, attachments, buttons, error, error_details FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

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

CREATE TABLE job_images (
    job_id   TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    param    TEXT NOT NULL,    -- the catalogue's parameter: image, face
    filename TEXT NOT NULL,
    data     BLOB NOT NULL CHECK (length(data) > 0),
    PRIMARY KEY (job_id, param)
);

CREATE TRIGGER job_images_end AFTER UPDATE OF state ON jobs WHEN NEW.state = 'done'
BEGIN
    DELETE FROM job_images WHERE job_id = NEW.job_id;
END;
