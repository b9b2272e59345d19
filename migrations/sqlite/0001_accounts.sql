-- Key/value facts about this database: the token key check, the synced command fingerprint.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One PixVerse account configuration per Discord channel (the useapi account/<channel>).
-- The token is stored only encrypted (Fernet) plus a keyed hash (HMAC-SHA256) so the
-- "same discord value" rule is an index lookup, not a decryption of every row.
CREATE TABLE accounts (
    channel_id      TEXT PRIMARY KEY,
    guild_id        TEXT NOT NULL,
    token_encrypted BLOB NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    token_last4     TEXT NOT NULL,
    discord_user_id TEXT NOT NULL UNIQUE,
    max_jobs        INTEGER NOT NULL CHECK (max_jobs >= 1),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE INDEX accounts_guild ON accounts (guild_id);
