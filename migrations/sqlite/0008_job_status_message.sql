-- The status message of a job a Discord member asked for: the one message the bot edits as the
-- job moves, kept with the job so that every process (and a restarted one) edits that message.
--
-- status_message_id: the Discord message; NULL until the bot has one (and for HTTP API jobs).
-- status_message_in_channel: 0, the reply to the member's interaction (edited through the
-- interaction's webhook while Discord allows); 1, a message the bot posted in the job's
-- request_channel_id (edited through the channel). Only a recorded message can be in a channel.
--
-- Added in place (ALTER TABLE ADD COLUMN checks the CHECKs against the rows there: NULL and 0
-- pass), so no rebuild of jobs: the rows, indexes and the job_images trigger stay as 0006 made them.
ALTER TABLE jobs ADD COLUMN status_message_id TEXT;
ALTER TABLE jobs ADD COLUMN status_message_in_channel INTEGER NOT NULL DEFAULT 0
    CHECK (status_message_in_channel IN (0, 1))
    CONSTRAINT jobs_status_message_in_channel_needs_id
    CHECK (status_message_in_channel = 0 OR status_message_id IS NOT NULL);

-- A member's last jobs in a server, newest first (JobStore.of_member): a search of this index
-- read backwards from the newest, never a scan of the server's month of history. Every row is in
-- it (ended jobs are shown too); guild_id and requester_id never change, so it costs only inserts.
CREATE INDEX jobs_member ON jobs (guild_id, requester_id, seq);
