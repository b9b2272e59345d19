"""Discord's sharding rule, in one place: which shard receives a server's gateway events; and what
each process says it follows, so that two processes following the same servers are told."""

from __future__ import annotations

import re

# A process's servers: (SHARD_COUNT, its SHARD_IDS); None: every server (SHARD_IDS unset).
Shards = tuple[int, frozenset[int]] | None

_CLAIM = re.compile(r"^(?:all|([1-9][0-9]*):([0-9]+(?:,[0-9]+)*))$")


def shard_of(guild_id: int | str, shard_count: int) -> int:
    """(server id >> 22) % shard count, as Discord assigns servers to shards."""
    return (int(guild_id) >> 22) % shard_count


def _ids(shards: tuple[int, frozenset[int]]) -> str:
    return ",".join(str(s) for s in sorted(shards[1]))


def claim(shards: Shards) -> str:
    """What a process writes with its lease: ``all``, or ``<count>:<id>,<id>``."""
    return "all" if shards is None else f"{shards[0]}:{_ids(shards)}"


def read_claim(text: str) -> Shards:
    """The servers a claim names; ValueError for text no process writes."""
    match = _CLAIM.match(text)
    if match is None:
        raise ValueError(f"not a shard claim: {text[:40]!r}")
    if text == "all":
        return None
    return int(match.group(1)), frozenset(int(s) for s in match.group(2).split(","))


def describe(shards: Shards) -> str:
    if shards is None:
        return "every server (SHARD_IDS unset)"
    return f"shard{'s' if len(shards[1]) > 1 else ''} {_ids(shards)} of {shards[0]}"


def clash(mine: Shards, theirs: Shards) -> str | None:
    """Why another live process and this one must not run together as configured, or None."""
    if mine is not None and theirs is not None and mine[0] != theirs[0]:
        return (f"runs with SHARD_COUNT={theirs[0]} and this process with SHARD_COUNT={mine[0]}: they split the"
                " servers differently, so some servers are followed by two processes and some by none."
                " Give every process the same SHARD_COUNT")
    if mine is None or theirs is None or mine[1] & theirs[1]:
        return (f"follows {describe(theirs)} and this process {describe(mine)}: the servers of both are"
                " followed twice. Run each shard in one process only (SHARD_COUNT and SHARD_IDS)")
    return None
