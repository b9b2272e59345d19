-- Where the bot tells a server's managers that one of its accounts left rotation or came back
-- (/pixverse-settings alerts:#channel); NULL: nowhere (as SQLite's 0009).
ALTER TABLE server_settings ADD COLUMN alerts_channel_id TEXT
    CHECK (alerts_channel_id IS NULL OR alerts_channel_id ~ '^[0-9]{15,21}$');

-- /pixverse-status reads a server's jobs ended in the last 24 hours: only ended jobs, by time.
CREATE INDEX jobs_ended ON jobs (guild_id, updated_at) WHERE state = 'done';
