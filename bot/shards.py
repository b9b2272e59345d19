"""Discord's sharding rule, in one place: which shard receives a server's gateway events."""

from __future__ import annotations


def shard_of(guild_id: int | str, shard_count: int) -> int:
    """(server id >> 22) % shard count, as Discord assigns servers to shards."""
    return (int(guild_id) >> 22) % shard_count
