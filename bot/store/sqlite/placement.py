"""Slots: reserving and releasing account capacity, each in one SQL transaction.

**What guards capacity** (what any other store must guarantee as well): capacity is the
number of a server's jobs holding a slot (``state`` placed or submitted) per account, counted and taken in one
transaction that holds SQLite's write lock *from before its first read to its commit*.
SQLite lets one writer in at a time across every process sharing the file, so no two
placements can both see the same free slot. Two forms take the lock that way:

* ``BEGIN IMMEDIATE`` (not a plain BEGIN, which would read first and ask for the lock at
  the first write): :meth:`Database.run` opens every multi-statement transaction with it;
* a single writing statement in autocommit: SQLite takes the write lock when the
  statement starts, before it reads (``INSERT … SELECT`` below counts and inserts under it).

The common cases are one such statement (one call to aiosqlite's thread, and the lock
held only while SQLite runs it): :data:`PLACE_FREE` for a new job, :data:`PLACE_ON_FREE`
for a button, :func:`release_statement` for an ending job. What they do not cover (a
queue, an error to explain, a freed slot that waiting jobs should take) goes to
:func:`place`, :func:`place_on`, :func:`promote` and :func:`requeue`, each one
``BEGIN IMMEDIATE`` transaction given a :class:`Tx` by :meth:`Database.run`. ``tests/store`` checks both forms against two connections.
"""

from __future__ import annotations

import json
import random
import sqlite3
from typing import Any, Protocol

from bot.store.sqlite.database import Database, Tx
from bot.dispatch.models import Job, JobState, JobStatus, job_from_row, new_job_id
from bot.store import NewJob, Placement, rules

# The jobs holding a slot of account ``a``: its load, counted wherever capacity is decided.
_LOAD = "(SELECT COUNT(*) FROM jobs j WHERE j.account_channel_id = a.channel_id AND j.slot_held = 1)"

_ACCOUNTS_WITH_LOAD = (
    f"SELECT a.channel_id, a.discord_user_id, a.max_jobs, a.in_rotation, a.error, {_LOAD} AS executing FROM accounts a"
)


class Reads(Protocol):
    """What the refusals below read through: a transaction's :class:`Tx`, or the lookups of
    :class:`LookupReads` when no lock is wanted."""

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]: ...

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None: ...


class LookupReads:
    """Reads without a transaction or SQLite's write lock (the loop's own connection)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return await self._db.lookup_all(sql, params)

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        return await self._db.lookup_one(sql, params)


async def _free_accounts(tx: Tx, guild_id: str) -> list[sqlite3.Row]:
    return rules.free_accounts(
        await tx.fetchall(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = ? AND a.in_rotation = 1", (guild_id,))
    )


async def _executing_ids(tx: Reads, where: str, value: str) -> list[str]:
    rows = await tx.fetchall(f"SELECT job_id FROM jobs WHERE {where} = ? AND slot_held = 1 ORDER BY seq", (value,))
    return [row[0] for row in rows]


_JOB_COLUMNS = (
    "job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,"
    " request_channel_id, verb, params, parent_job_id, status, state, owner, created_at, updated_at"
)


def new_job_params(new: NewJob, *, now: float, owner: str | None, **more: Any) -> dict[str, Any]:
    """A new job's named parameters (``:job_id``, ``:guild`` …) for the statements that insert it."""
    return {
        "job_id": new_job_id(), "guild": new.guild_id, "requester": new.requester_id,
        "asked_in": new.request_channel_id, "verb": new.verb.value,
        "params": json.dumps(new.params, ensure_ascii=False), "parent": new.parent_job_id,
        "status": JobStatus.CREATED.value, "owner": owner, "now": now, **more,
    }


async def _insert(tx: Tx, new: NewJob, *, now: float, account: Any | None, owner: str) -> Job:
    """A new job on ``account`` (placed), or with none (waiting in the queue)."""
    on = account is not None
    row = await tx.fetchone(
        f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (:job_id, :guild, :account, :user, :max_jobs, :requester,"
        " :asked_in, :verb, :params, :parent, :status, :state, :owner, :now, :now) RETURNING *",
        new_job_params(
            new, now=now, owner=owner if on else None, account=account["channel_id"] if on else None,
            user=account["discord_user_id"] if on else None, max_jobs=account["max_jobs"] if on else None,
            state=(JobState.PLACED if on else JobState.WAITING).value,
        ),
    )
    return job_from_row(row)


# Puts a job on an account, afresh: placed, not sent, a new version (so that a decision made
# on a read of it from before does not apply any more).
_ASSIGN = (
    "UPDATE jobs SET state = 'placed', version = version + 1, account_channel_id = ?, account_user_id = ?,"
    " max_jobs = ?, owner = ?, updated_at = ?{more} WHERE job_id = ? RETURNING *"
)


async def _assign(tx: Tx, job_id: str, account: Any, *, owner: str, now: float) -> Job:
    row = await tx.fetchone(
        _ASSIGN.format(more=""),
        (account["channel_id"], account["discord_user_id"], account["max_jobs"], owner, now, job_id),
    )
    return job_from_row(row)


async def promote(tx: Tx, guild_id: str, *, now: float, owner: str, rng: random.Random) -> list[Job]:
    """Gives the server's free slots to its oldest waiting jobs."""
    promoted = []
    while True:
        waiting = await tx.fetchone(
            "SELECT job_id FROM jobs WHERE guild_id = ? AND queued = 1 ORDER BY seq LIMIT 1", (guild_id,)
        )
        if waiting is None:
            return promoted
        free = await _free_accounts(tx, guild_id)
        if not free:
            return promoted
        promoted.append(await _assign(tx, waiting["job_id"], rng.choice(free), owner=owner, now=now))


# A new job on a random account of its server with a free slot, in one statement; nothing
# when there is none, or when jobs wait (they go first: the slower path queues it behind them).
# ``:pick`` in [0, 1) chooses uniformly among the free accounts, as rng.choice would.
PLACE_FREE = (
    "WITH free AS ("
    " SELECT a.channel_id, a.discord_user_id, a.max_jobs,"
    " ROW_NUMBER() OVER (ORDER BY a.channel_id) - 1 AS n, COUNT(*) OVER () AS total"
    " FROM accounts a WHERE a.guild_id = :guild AND a.in_rotation = 1"
    f" AND {_LOAD} < a.max_jobs"
    " AND NOT EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = :guild AND w.queued = 1))"
    f" INSERT INTO jobs ({_JOB_COLUMNS})"
    " SELECT :job_id, :guild, channel_id, discord_user_id, max_jobs, :requester, :asked_in, :verb, :params, :parent,"
    " :status, 'placed', :owner, :now, :now FROM free WHERE n = CAST(:pick * total AS INTEGER)"
    " RETURNING *"
)

# A follow-up job on one given account while it is in rotation and has a free slot.
PLACE_ON_FREE = (
    f"INSERT INTO jobs ({_JOB_COLUMNS})"
    " SELECT :job_id, :guild, a.channel_id, a.discord_user_id, a.max_jobs, :requester, :asked_in, :verb, :params,"
    " :parent, :status, 'placed', :owner, :now, :now FROM accounts a"
    " WHERE a.guild_id = :guild AND a.channel_id = :account AND a.in_rotation = 1"
    f" AND {_LOAD} < a.max_jobs"
    " RETURNING *"
)


def release_statement(
    job_id: str, status: JobStatus, *, now: float, fields: dict[str, Any], expected: Job | None = None,
) -> tuple[str, list[Any]]:
    """Ends an executing (or waiting) job and frees its slot, exactly once, in one statement.

    It matches only while the job still holds its slot or waits in the queue, so of any
    number of racing paths (completion, cancel, timeout, account removal) one wins and the
    others change nothing. It returns the ended row and whether its server has jobs
    waiting, which then take the freed slot (:func:`promote`)."""
    assert status not in (JobStatus.CREATED, JobStatus.STARTED, JobStatus.PROGRESS)
    # An ended job has no owner: the lease it named may go (ON DELETE SET NULL then has only live
    # jobs to touch, not a process's whole history).
    values = {"status": status.value, "state": JobState.DONE.value, "owner": None, "updated_at": now, **fields}
    # A job with an end to tell (0010): a member's (their message shows it) or the HTTP API's with a
    # replyUrl (it is POSTed there); marked told by the one who told it (JobStore.mark_final_shown).
    # A CASE, as SQLite evaluates both sides of an OR: only an HTTP API job's parameters are read.
    assignments = ", ".join(f"{column} = ?" for column in values) + (
        ", final_pending = CASE WHEN request_channel_id <> 'api' THEN 1"
        " WHEN json_valid(params) THEN COALESCE(json_extract(params, '$.replyUrl'), '') <> '' ELSE 0 END")
    where, params = "job_id = ? AND state <> 'done'", [job_id]
    if expected is not None:
        # Decided from an earlier read (a timeout, an account's jobs): only if the job is
        # still where that read saw it, not after it moved (to another account, or from the queue).
        where += " AND version = ?"
        params += [expected.version]
    sql = (f"UPDATE jobs SET {assignments} WHERE {where} RETURNING *,"
           " EXISTS (SELECT 1 FROM jobs w WHERE w.guild_id = jobs.guild_id AND w.queued = 1) AS others_waiting")
    return sql, [*values.values(), *params]


async def place(tx: Tx, new: NewJob, *, now: float, owner: str, queue_size: int, rng: random.Random) -> Placement:
    """Puts a new job on a random account of its server with a free slot, or in the queue
    (behind the jobs already waiting, even if a slot has just been freed for them).

    Raises 404 (no account), 503 (none in rotation) or 429 (all busy and no queue room).
    """
    free, waiting = await refuse_or_free(tx, new.guild_id, queue_size=queue_size)
    if free and not waiting:
        # Uniform among the accounts with a free slot: the seed's "randomly selecting an
        # account with available capacity".
        return Placement(await _insert(tx, new, now=now, account=rng.choice(free), owner=owner), None)
    return Placement(await _insert(tx, new, now=now, account=None, owner=owner), waiting + 1)


async def refuse_or_free(reads: Reads, guild_id: str, *, queue_size: int) -> tuple[list[sqlite3.Row], int]:
    """Raises the refusal a new job of this server gets as things stand (:func:`rules.new_job`).
    Otherwise returns the free accounts and the number of jobs waiting, for the caller to place
    or queue it."""
    accounts = await reads.fetchall(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = ?", (guild_id,))
    waiting = (await reads.fetchone("SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND queued = 1", (guild_id,)))[0]
    free = await rules.new_job(accounts, waiting, queue_size=queue_size,
                               executing_ids=lambda: _executing_ids(reads, "guild_id", guild_id))
    return free, waiting


async def place_on(tx: Tx, new: NewJob, *, account_channel_id: str, now: float, owner: str) -> Job:
    """Puts a follow-up job on one given account (only it can press its own buttons)."""
    row = await refuse_on(tx, new.guild_id, account_channel_id)
    return await _insert(tx, new, now=now, account=row, owner=owner)


async def refuse_on(reads: Reads, guild_id: str, account_channel_id: str) -> sqlite3.Row:
    """Raises the refusal a button on this account gets as things stand (:func:`rules.button`);
    otherwise returns the account, which has a free slot."""
    row = await reads.fetchone(
        _ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = ? AND a.channel_id = ?", (guild_id, account_channel_id)
    )
    return await rules.button(row, account_channel_id,
                              executing_ids=lambda: _executing_ids(reads, "account_channel_id", account_channel_id))


async def requeue(
    tx: Tx, expected: Job, *, now: float, owner: str, rng: random.Random, error: str, allow_same: bool
) -> tuple[Job | None, list[Job]]:
    """Moves an executing job to another account with a free slot (its account was rejected, or
    PixVerse refused it for load). With ``allow_same`` the job may stay on its own account,
    whose slot it already holds. Returns the moved job (None: nowhere to go) and the waiting
    jobs that took the slot it left."""
    # Only the job as the caller saw it: the same refusal seen twice moves it once.
    row = await tx.fetchone(
        "SELECT * FROM jobs WHERE job_id = ? AND slot_held = 1 AND version = ?", (expected.job_id, expected.version)
    )
    if row is None:
        return None, []
    job_id = expected.job_id
    free = [a for a in await _free_accounts(tx, row["guild_id"]) if a["channel_id"] != row["account_channel_id"]]
    if not free and allow_same:
        own = await tx.fetchone(
            _ACCOUNTS_WITH_LOAD + " WHERE a.channel_id = ? AND a.in_rotation = 1", (row["account_channel_id"],)
        )
        free = [own] if own is not None else []
    if not free:
        return None, []
    account = rng.choice(free)
    # One statement: the job is never seen half moved (the schema's CHECKs hold after each one).
    moved = job_from_row(await tx.fetchone(
        _ASSIGN.format(more=", status = ?, submitted_at = NULL, message_id = NULL, progress = NULL,"
                            " pixverse_open = 0, placement_attempts = placement_attempts + 1, error_details = ?"),
        (account["channel_id"], account["discord_user_id"], account["max_jobs"], owner, now,
         JobStatus.CREATED.value, error, job_id),
    ))
    # The slot it left may serve the oldest waiting job, so the queue stays first in first out.
    return moved, await promote(tx, row["guild_id"], now=now, owner=owner, rng=rng)
