"""Slots: reserving and releasing account capacity, each in one SQL transaction.

Capacity is the number of a server's jobs with ``slot_held = 1`` per account, counted
inside ``BEGIN IMMEDIATE``: SQLite lets one writer in at a time across every process that
shares the file, so no two placements can both see the same free slot. Each transaction
is a plain sqlite3 function run whole in the database thread (:meth:`Database.run`).
"""

from __future__ import annotations

import json
import random
import sqlite3
from typing import Any

from bot.store.sqlite.database import Database
from bot.dispatch.models import Job, JobStatus, job_from_row, new_job_id
from bot.errors import ApiError
from bot.store import BUSY, NO_ACCOUNTS, NONE_IN_ROTATION, NewJob, Placement, Released, busy

_ACCOUNTS_WITH_LOAD = (
    "SELECT a.channel_id, a.discord_user_id, a.max_jobs, a.in_rotation, a.error,"
    " (SELECT COUNT(*) FROM jobs j WHERE j.account_channel_id = a.channel_id AND j.slot_held = 1) AS executing"
    " FROM accounts a"
)


# --- plain sqlite3, run inside one transaction ---------------------------------------


def _free(rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    return [row for row in rows if row["in_rotation"] and row["executing"] < row["max_jobs"]]


def _free_accounts(raw: sqlite3.Connection, guild_id: str) -> list[sqlite3.Row]:
    return _free(raw.execute(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = ? AND a.in_rotation = 1", (guild_id,)).fetchall())


def _job(raw: sqlite3.Connection, job_id: str) -> Job:
    return job_from_row(raw.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone())


def _executing_ids(raw: sqlite3.Connection, where: str, value: str) -> list[str]:
    rows = raw.execute(f"SELECT job_id FROM jobs WHERE {where} = ? AND slot_held = 1 ORDER BY seq", (value,))
    return [row[0] for row in rows]


def _insert(raw: sqlite3.Connection, new: NewJob, *, now: float, account: Any | None, owner: str) -> Job:
    row = raw.execute(
        "INSERT INTO jobs (job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,"
        " request_channel_id, verb, params, parent_job_id, status, slot_held, queued, owner, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        (
            new_job_id(),
            new.guild_id,
            account["channel_id"] if account else None,
            account["discord_user_id"] if account else None,
            account["max_jobs"] if account else None,
            new.requester_id,
            new.request_channel_id,
            new.verb.value,
            json.dumps(new.params, ensure_ascii=False),
            new.parent_job_id,
            JobStatus.CREATED.value,
            int(account is not None),
            int(account is None),
            owner if account else None,
            now,
            now,
        ),
    ).fetchone()
    return job_from_row(row)


def _assign(raw: sqlite3.Connection, job_id: str, account: Any, *, owner: str, now: float, extra: str = "") -> Job:
    raw.execute(
        "UPDATE jobs SET account_channel_id = ?, account_user_id = ?, max_jobs = ?, slot_held = 1, queued = 0,"
        f" owner = ?, updated_at = ?{extra} WHERE job_id = ?",
        (account["channel_id"], account["discord_user_id"], account["max_jobs"], owner, now, job_id),
    )
    return _job(raw, job_id)


def _promote(raw: sqlite3.Connection, guild_id: str, *, now: float, owner: str, rng: random.Random) -> list[Job]:
    """Gives the server's free slots to its oldest waiting jobs."""
    promoted = []
    while True:
        waiting = raw.execute(
            "SELECT job_id FROM jobs WHERE guild_id = ? AND queued = 1 ORDER BY seq LIMIT 1", (guild_id,)
        ).fetchone()
        if waiting is None:
            return promoted
        free = _free_accounts(raw, guild_id)
        if not free:
            return promoted
        promoted.append(_assign(raw, waiting["job_id"], rng.choice(free), owner=owner, now=now))


def place_sync(
    raw: sqlite3.Connection, new: NewJob, *, now: float, owner: str, queue_size: int, rng: random.Random
) -> Placement:
    accounts = raw.execute(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = ?", (new.guild_id,)).fetchall()
    if not accounts:
        raise ApiError(404, NO_ACCOUNTS)
    if not any(row["in_rotation"] for row in accounts):
        raise ApiError(503, NONE_IN_ROTATION)
    free = _free(accounts)
    if free:
        # Uniform among the accounts with a free slot: the seed's "randomly selecting an
        # account with available capacity".
        return Placement(_insert(raw, new, now=now, account=rng.choice(free), owner=owner), None)
    waiting = raw.execute("SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND queued = 1", (new.guild_id,)).fetchone()[0]
    if waiting < queue_size:
        return Placement(_insert(raw, new, now=now, account=None, owner=owner), waiting + 1)
    raise busy(BUSY, _executing_ids(raw, "guild_id", new.guild_id))


def place_on_sync(raw: sqlite3.Connection, new: NewJob, *, account_channel_id: str, now: float, owner: str) -> Job:
    row = raw.execute(
        _ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = ? AND a.channel_id = ?", (new.guild_id, account_channel_id)
    ).fetchone()
    if row is None:
        raise ApiError(404, f"The PixVerse account of channel {account_channel_id} that made this job is no longer configured")
    if not row["in_rotation"]:
        reason = f": {row['error']}" if row["error"] else ""
        raise ApiError(409, f"The PixVerse account of channel {account_channel_id} is out of rotation{reason}")
    if row["executing"] >= row["max_jobs"]:
        raise busy(
            f"The PixVerse account of channel {account_channel_id} is busy",
            _executing_ids(raw, "account_channel_id", account_channel_id),
        )
    return _insert(raw, new, now=now, account=row, owner=owner)


def release_sync(
    raw: sqlite3.Connection, job_id: str, status: JobStatus, *, now: float, owner: str, rng: random.Random,
    fields: dict[str, Any], expected: Job | None = None,
) -> Released:
    values = {"status": status.value, "updated_at": now, "slot_held": 0, "queued": 0, **fields}
    assignments = ", ".join(f"{column} = ?" for column in values)
    where, params = "job_id = ? AND (slot_held = 1 OR queued = 1)", [job_id]
    if expected is not None:
        # Decided from an earlier read (a timeout, an account's jobs): only if the job is
        # still where that read saw it, not after it moved to another account meanwhile.
        where += " AND account_channel_id IS ? AND placement_attempts = ?"
        params += [expected.account_channel_id, expected.placement_attempts]
    ended = raw.execute(f"UPDATE jobs SET {assignments} WHERE {where} RETURNING *", (*values.values(), *params)).fetchone()
    if ended is None:
        return Released(None, [])
    job = job_from_row(ended)
    return Released(job, _promote(raw, job.guild_id, now=now, owner=owner, rng=rng))


def requeue_sync(
    raw: sqlite3.Connection, expected: Job, *, now: float, owner: str, rng: random.Random, error: str, allow_same: bool
) -> tuple[Job | None, list[Job]]:
    # Only the job as the caller saw it: the same refusal seen twice moves it once.
    row = raw.execute(
        "SELECT * FROM jobs WHERE job_id = ? AND slot_held = 1 AND account_channel_id IS ? AND placement_attempts = ?",
        (expected.job_id, expected.account_channel_id, expected.placement_attempts),
    ).fetchone()
    if row is None:
        return None, []
    job_id = expected.job_id
    free = [a for a in _free_accounts(raw, row["guild_id"]) if a["channel_id"] != row["account_channel_id"]]
    if not free and allow_same:
        own = raw.execute(
            _ACCOUNTS_WITH_LOAD + " WHERE a.channel_id = ? AND a.in_rotation = 1", (row["account_channel_id"],)
        ).fetchone()
        free = [own] if own is not None else []
    if not free:
        return None, []
    raw.execute(
        "UPDATE jobs SET status = ?, submitted_at = NULL, message_id = NULL, progress = NULL, pixverse_open = 0,"
        " placement_attempts = placement_attempts + 1, error_details = ? WHERE job_id = ?",
        (JobStatus.CREATED.value, error, job_id),
    )
    moved = _assign(raw, job_id, rng.choice(free), owner=owner, now=now)
    # The slot it left may serve the oldest waiting job, so the queue stays first in first out.
    return moved, _promote(raw, row["guild_id"], now=now, owner=owner, rng=rng)


# --- the async API ---------------------------------------------------------------------


async def place(db: Database, new: NewJob, *, now: float, owner: str, queue_size: int, rng: random.Random) -> Placement:
    """Puts a new job on a random account of its server with a free slot, or in the queue.

    Raises 404 (no account), 503 (none in rotation) or 429 (all busy and no queue room).
    """
    return await db.run(lambda raw: place_sync(raw, new, now=now, owner=owner, queue_size=queue_size, rng=rng))


async def place_on(db: Database, new: NewJob, *, account_channel_id: str, now: float, owner: str) -> Job:
    """Puts a follow-up job on one given account (only it can press its own buttons)."""
    return await db.run(lambda raw: place_on_sync(raw, new, account_channel_id=account_channel_id, now=now, owner=owner))


async def release(
    db: Database, job_id: str, status: JobStatus, *, now: float, owner: str, rng: random.Random,
    fields: dict[str, Any] | None = None, expected: Job | None = None,
) -> Released:
    """Ends an executing (or waiting) job and frees its slot, exactly once.

    The UPDATE matches only while the job still holds its slot or waits in the queue, so
    of any number of racing paths (completion, cancel, timeout, account removal) one wins
    and the others change nothing. The freed slot goes to the server's oldest waiting
    jobs in the same transaction.
    """
    assert status not in (JobStatus.CREATED, JobStatus.STARTED, JobStatus.PROGRESS)
    return await db.run(
        lambda raw: release_sync(raw, job_id, status, now=now, owner=owner, rng=rng, fields=fields or {}, expected=expected)
    )


async def promote_waiting(db: Database, guild_id: str, *, now: float, owner: str, rng: random.Random) -> list[Job]:
    """Gives free slots to waiting jobs (after an account is added or put back in rotation)."""
    # Most saves find nobody waiting: a lookup answers that without a write transaction.
    # No race: the save committed before this look, so a job queued after it has seen the
    # new account, and one queued before it is seen here.
    if await db.lookup_one("SELECT 1 FROM jobs WHERE guild_id = ? AND queued = 1 LIMIT 1", (guild_id,)) is None:
        return []
    return await db.run(lambda raw: _promote(raw, guild_id, now=now, owner=owner, rng=rng))


async def requeue(
    db: Database, expected: Job, *, now: float, owner: str, rng: random.Random, error: str, allow_same: bool = False
) -> tuple[Job | None, list[Job]]:
    """Moves an executing job to another account with a free slot, in one transaction (its
    account was rejected, or PixVerse refused it for load). With ``allow_same`` the job may
    stay on its own account, whose slot it already holds. Returns the moved job (None:
    nowhere to go) and the waiting jobs that took the slot it left."""
    return await db.run(
        lambda raw: requeue_sync(raw, expected, now=now, owner=owner, rng=rng, error=error, allow_same=allow_same)
    )


async def queue_position(db: Database, job: Job) -> int | None:
    if not job.queued:
        return None
    row = await db.fetchone(
        "SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND queued = 1 AND seq <= ?", (job.guild_id, job.seq)
    )
    return int(row[0])
