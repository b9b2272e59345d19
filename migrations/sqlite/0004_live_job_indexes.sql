-- Periodic work reads only live rows. The sweep's timed-out query and orphan recovery walk the
-- jobs that hold a slot, and waiting jobs, in submission order; without these they read the
-- whole table (a month of finished jobs: about 710 ms per query at a million rows).
CREATE INDEX jobs_live_by_seq ON jobs (seq) WHERE slot_held = 1;
CREATE INDEX jobs_waiting_by_seq ON jobs (seq) WHERE queued = 1;
