-- HTTP API tokens. One belongs to one Discord server; only a hash is kept, the token is
-- shown once when created. A revoked token stays (revoked_at set) so its use is a clean 401.
CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    guild_id    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE INDEX api_tokens_guild ON api_tokens (guild_id) WHERE revoked_at IS NULL;
