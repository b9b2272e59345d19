-- The status message of a job a Discord member asked for (as SQLite's 0008): the one message the
-- bot edits as the job moves, kept with the job so that every process (and a restarted one)
-- edits that message.
--
-- status_message_id: the Discord message; NULL until the bot has one (and for HTTP API jobs).
-- status_message_in_channel: false, the reply to the member's interaction (edited through the
-- interaction's webhook while Discord allows); true, a message the bot posted in the job's
-- request_channel_id (edited through the channel). Only a recorded message can be in a channel.
--
-- Existing rows get NULL and false (a constant default: no rewrite of the table). No trigger
-- of jobs announces anything: recording a status message wakes no process (only placement's
-- own pg_notify calls do).
ALTER TABLE jobs ADD COLUMN status_message_id TEXT;
ALTER TABLE jobs ADD COLUMN status_message_in_channel BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_message_in_channel_needs_id
    CHECK (NOT status_message_in_channel OR status_message_id IS NOT NULL);

-- A member's last jobs in a server, newest first (JobStore.of_member): a search of this index
-- read backwards from the newest, never a scan of the server's month of history. Every row is in
-- it (ended jobs are shown too); guild_id and requester_id never change, so it costs only inserts.
CREATE INDEX jobs_member ON jobs (guild_id, requester_id, seq);
