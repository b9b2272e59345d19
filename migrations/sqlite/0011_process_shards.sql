-- What each process follows, written with its lease: 'all' (every server) or '<SHARD_COUNT>:<id>,<id>'
-- (its gateway shards). Two live processes following the same servers are told in their logs.
-- NULL: a process of an earlier version, which does not say.
ALTER TABLE processes ADD COLUMN follows TEXT
    CHECK (follows = 'all' OR (follows GLOB '[1-9]*:[0-9]*' AND follows NOT GLOB '*[^0-9:,]*'
                               AND follows NOT GLOB '*:*:*' AND follows NOT GLOB '*,' AND follows NOT GLOB '*,,*'
                               AND follows NOT GLOB '*:,*'));
