-- A server's own choices about the bot, set with /pixverse-settings by a manager (as SQLite's 0007).
-- buttons: who may press a result's buttons (requester: the member who asked and server
-- managers; everyone: any member). A server without a row has the defaults.
CREATE TABLE server_settings (
    guild_id   TEXT PRIMARY KEY,
    buttons    TEXT NOT NULL DEFAULT 'requester' CHECK (buttons IN ('requester', 'everyone')),
    updated_at DOUBLE PRECISION NOT NULL
);
