"""SQL for reading jobs and for the updates that do not touch slots."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Collection
from typing import Any, TypeVar

from bot.dispatch.images import Image
from bot.store.sqlite import placement
from bot.store.sqlite.database import Database, Tx
from bot.store.decoded import DecodedJobs
from bot.store.conditions import asked_through
from bot.store import EndedJobs, NewJob, Placement, Released, ended_jobs
from bot.dispatch.models import Job, JobStatus, job_from_row

log = logging.getLogger(__name__)
T = TypeVar("T")


# Takes or renews a process's lease: (owner, heartbeat_at).
LEASE = (
    "INSERT INTO processes (owner, heartbeat_at, follows) VALUES (?, ?, ?)"
    " ON CONFLICT(owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, follows = excluded.follows"
)

# The users a PixVerse message is for, at most, checked in record_message_progress's one statement
# (a message for more falls back to the general path).
MESSAGE_USERS = 8

# Rows deleted per purge transaction: short enough that no write waits long behind one.
PURGE_BATCH = 500


def _of_shards(shards: tuple[int, frozenset[int]] | None) -> tuple[str, list[int]]:
    """The condition (and its parameters) keeping the jobs of the servers of these shards
    (shard count, shard ids; bot.shards.shard_of); nothing for None, every server."""
    if shards is None:
        return "", []
    count, ids = shards
    return f" AND ((CAST(guild_id AS INTEGER) >> 22) % ?) IN ({','.join('?' * len(ids))})", [count, *sorted(ids)]


class JobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._decoded = DecodedJobs()  # the polled path's memo (bot/store/decoded.py)

    # --- placement: capacity guarded in one transaction each (see placement.py) -----------

    async def place(self, new: NewJob, *, now: float, owner: str, queue_size: int, rng: random.Random) -> Placement:
        if new.images:
            # The job and its images in one transaction: a refusal leaves neither.
            await placement.refuse_or_free(placement.LookupReads(self._db), new.guild_id, queue_size=queue_size)
            return await self._db.run(lambda tx: _with_images(
                tx, new, placement.place(tx, new, now=now, owner=owner, queue_size=queue_size, rng=rng)))
        # One statement when a slot is free and nobody waits: it counts and inserts under the
        # write lock, held only while SQLite runs it.
        row = await self._db.fetchone(
            placement.PLACE_FREE, placement.new_job_params(new, now=now, owner=owner, pick=rng.random())
        )
        if row is not None:
            return Placement(job_from_row(row), None)
        # Not placed. Most often the answer is a refusal (all busy: a client retrying), which
        # lookups without the lock can give; only a job to queue, or a slot freed meanwhile,
        # needs the whole decision in one transaction.
        await placement.refuse_or_free(placement.LookupReads(self._db), new.guild_id, queue_size=queue_size)
        return await self._db.run(
            lambda tx: placement.place(tx, new, now=now, owner=owner, queue_size=queue_size, rng=rng)
        )

    async def place_on(self, new: NewJob, *, account_channel_id: str, now: float, owner: str) -> Job:
        if new.images:
            await placement.refuse_on(placement.LookupReads(self._db), new.guild_id, account_channel_id)
            return await self._db.run(lambda tx: _with_images(tx, new, placement.place_on(
                tx, new, account_channel_id=account_channel_id, now=now, owner=owner)))
        row = await self._db.fetchone(
            placement.PLACE_ON_FREE,
            placement.new_job_params(new, now=now, owner=owner, account=account_channel_id),
        )
        if row is not None:
            return job_from_row(row)
        # Not placed: a read without the write lock says why; if it finds the slot free after
        # all (freed meanwhile), the transaction places it.
        await placement.refuse_on(placement.LookupReads(self._db), new.guild_id, account_channel_id)
        return await self._db.run(
            lambda tx: placement.place_on(tx, new, account_channel_id=account_channel_id, now=now, owner=owner)
        )

    async def release(self, job_id: str, status: JobStatus, *, now: float,
                      fields: dict[str, Any] | None = None, expected: Job | None = None) -> Released:
        # One statement; it also says whether jobs of the server wait. In the moment before the
        # caller promotes them a new job cannot take the freed slot: it sees them waiting and
        # queues behind them (placement.place).
        sql, params = placement.release_statement(job_id, status, now=now, fields=fields or {}, expected=expected)
        ended = await self._db.fetchone(sql, params)
        if ended is None:
            return Released(None)
        return Released(job_from_row(ended), bool(ended["others_waiting"]))

    async def promote_waiting(self, guild_id: str, *, now: float, owner: str | None,
                              rng: random.Random) -> list[Job]:
        """Gives free slots to waiting jobs (after an account is added or put back in rotation)."""
        # Most saves find nobody waiting: a lookup answers that without a write transaction.
        # No race: the save committed before this look, so a job queued after it has seen the
        # new account, and one queued before it is seen here.
        if await self._db.lookup_one("SELECT 1 FROM jobs WHERE guild_id = ? AND queued = 1 LIMIT 1", (guild_id,)) is None:
            return []
        return await self._db.run(lambda tx: placement.promote(tx, guild_id, now=now, owner=owner, rng=rng))

    async def requeue(self, expected: Job, *, now: float, owner: str, rng: random.Random, error: str,
                      allow_same: bool = False) -> tuple[Job | None, list[Job]]:
        return await self._db.run(
            lambda tx: placement.requeue(tx, expected, now=now, owner=owner, rng=rng, error=error, allow_same=allow_same)
        )

    async def queue_position(self, job: Job) -> int | None:
        if not job.queued:
            return None
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND queued = 1 AND seq <= ?", (job.guild_id, job.seq)
        )
        return int(row[0])

    # --- reading and the updates that do not touch slots ---------------------------------

    async def images(self, job_id: str) -> dict[str, Image]:
        rows = await self._db.lookup_all("SELECT param, filename, data FROM job_images WHERE job_id = ?", (job_id,))
        return {row["param"]: Image(row["filename"], bytes(row["data"])) for row in rows}

    async def get(self, job_id: str, guild_id: str | None = None) -> Job | None:
        # A lookup by the unique job id: answered on the loop's thread, not queued behind the
        # writes of every running job (PixVerse's progress edits) on the worker thread.
        if guild_id is None:
            row = await self._db.lookup_one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        else:
            row = await self._db.lookup_one("SELECT * FROM jobs WHERE job_id = ? AND guild_id = ?", (job_id, guild_id))
        return None if row is None else job_from_row(row)

    async def get_with_token_last4(self, job_id: str, guild_id: str) -> tuple[Job, str | None] | None:
        """The job and the last 4 characters of its account's token (None without an account), in
        one lookup: what a job's public answer needs (GET /jobs/?jobid=, polled by clients)."""
        row = await self._db.lookup_one(
            "SELECT j.*, a.token_last4 AS account_token_last4 FROM jobs j LEFT JOIN accounts a"
            " ON a.channel_id = j.account_channel_id AND a.guild_id = j.guild_id WHERE j.job_id = ? AND j.guild_id = ?",
            (job_id, guild_id),
        )
        if row is None:
            return None
        return self._decoded.of(row)

    async def executing(self, guild_id: str) -> list[Job]:
        """The server's jobs that hold a slot or wait for one, oldest first."""
        # Two partial-index lookups, not a scan of the server's month of history.
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND slot_held = 1"
            " UNION ALL SELECT * FROM jobs WHERE guild_id = ? AND queued = 1 ORDER BY seq",
            (guild_id, guild_id),
        )
        return [job_from_row(row) for row in rows]

    async def holding_slots(self, account_channel_id: str) -> list[Job]:
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE account_channel_id = ? AND slot_held = 1 ORDER BY seq", (account_channel_id,)
        )
        return [job_from_row(row) for row in rows]

    async def open_at_pixverse(self, account_channel_id: str) -> list[Job]:
        """Jobs PixVerse may still post for on this account (ended early ones included), oldest first."""
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE account_channel_id = ? AND pixverse_open = 1 ORDER BY seq", (account_channel_id,)
        )
        return [job_from_row(row) for row in rows]

    async def of_member(self, guild_id: str, requester_id: str, *, limit: int = 10) -> list[Job]:
        """The member's last ``limit`` jobs in the server, newest first, ended ones included."""
        if limit <= 0:
            return []  # SQLite reads a negative LIMIT as none at all
        # The index jobs_member (guild_id, requester_id, seq) read backwards: ``limit`` rows, no sort.
        rows = await self._db.lookup_all(
            "SELECT * FROM jobs WHERE guild_id = ? AND requester_id = ? ORDER BY seq DESC LIMIT ?",
            (guild_id, requester_id, limit),
        )
        return [job_from_row(row) for row in rows]

    async def set_status_message(self, job_id: str, message_id: str, *, in_channel: bool) -> bool:
        """Records the job's status message, whatever its state; nothing else changes (no
        updated_at, no version: a decision made on an earlier read of the job still applies)."""
        return await self._db.execute(
            "UPDATE jobs SET status_message_id = ?, status_message_in_channel = ? WHERE job_id = ?",
            (message_id, 1 if in_channel else 0, job_id),
        ) > 0

    async def mark_final_shown(self, job_id: str) -> bool:
        return await self._db.execute(
            "UPDATE jobs SET final_pending = 0 WHERE job_id = ? AND final_pending = 1", (job_id,),
        ) > 0

    async def final_not_shown(self, *, ended_before: float, ended_after: float, limit: int = 100,
                              shards: tuple[int, frozenset[int]] | None = None,
                              through_api: bool | None = None) -> list[Job]:
        if limit <= 0:
            return []
        # The partial index jobs_final_pending: ``final_pending = 1`` word for word, or SQLite
        # cannot tell that the index holds every row asked for.
        where, params = _of_shards(shards)
        rows = await self._db.lookup_all(
            f"SELECT * FROM jobs WHERE final_pending = 1 AND updated_at < ? AND updated_at >= ?{where}"
            f"{asked_through(through_api)}"
            " ORDER BY updated_at DESC LIMIT ?",
            (ended_before, ended_after, *params, limit),
        )
        return [job_from_row(row) for row in rows]

    async def mark_submitted(self, job: Job, now: float, *, owner: str) -> bool:
        """Claims the right to send the job, as placed, to PixVerse, once.

        False when the job ended, moved to another account (or moved and back), was taken
        over by another process, or was already sent: the caller must then not send it.
        """
        return await self._db.execute(
            "UPDATE jobs SET state = 'submitted', submitted_at = ?, pixverse_open = 1, updated_at = ?"
            " WHERE job_id = ? AND state = 'placed' AND owner = ? AND version = ?",
            (now, now, job.job_id, owner, job.version),
        ) > 0

    async def record_progress(
        self, job_id: str, status: JobStatus, *, now: float, message_id: str | None, progress: int | None,
        content: str | None,
    ) -> Job | None:
        """started/progress while the job still executes (an ended job is left as it is).

        Returns the job only to the call that moved it out of ``created``: the member hears
        "started" once, whether the news comes live, twice, or replayed from history.
        """
        started = await self._db.fetchone(
            "UPDATE jobs SET status = ?, updated_at = ? WHERE job_id = ? AND state = 'submitted' AND status = ? RETURNING *",
            (JobStatus.STARTED.value, now, job_id, JobStatus.CREATED.value),
        )
        await self._db.execute(
            "UPDATE jobs SET status = ?, message_id = COALESCE(?, message_id), progress = COALESCE(?, progress),"
            " content = COALESCE(?, content), updated_at = ? WHERE job_id = ? AND state = 'submitted'",
            (status.value, message_id, progress, content, now, job_id),
        )
        return None if started is None else job_from_row(started)

    async def record_message_progress(
        self, message_id: str, status: JobStatus, *, account_channel_id: str, guild_id: str,
        for_users: Collection[str], now: float, progress: int | None, content: str | None,
    ) -> Job | None:
        """record_progress's second write to the job of an attributed message, guarded by what the
        general path reads first (the message's job, still on this account and past ``created``; the
        account's user), in one statement: a running job's progress edit is one call to the database thread."""
        users = tuple(dict.fromkeys(for_users))[:MESSAGE_USERS]
        if not users:
            return None
        row = await self._db.fetchone(
            "UPDATE jobs SET status = ?, message_id = ?, progress = COALESCE(?, progress),"
            " content = COALESCE(?, content), updated_at = ?"
            " WHERE job_id = (SELECT job_id FROM pixverse_messages WHERE message_id = ?) AND account_channel_id = ?"
            " AND state = 'submitted' AND status <> 'created' AND EXISTS (SELECT 1 FROM accounts"
            f" WHERE channel_id = ? AND guild_id = ? AND discord_user_id IN ({', '.join('?' * len(users))}))"
            " RETURNING *",
            (status.value, message_id, progress, content, now, message_id, account_channel_id, account_channel_id,
             guild_id, *users),
        )
        return None if row is None else job_from_row(row)

    async def job_of_message(self, message_id: str) -> str | None:
        row = await self._db.fetchone("SELECT job_id FROM pixverse_messages WHERE message_id = ?", (message_id,))
        return None if row is None else row[0]

    async def remember_message(self, message_id: str, job_id: str) -> None:
        await self._db.execute(
            "INSERT INTO pixverse_messages (message_id, job_id) VALUES (?, ?) ON CONFLICT(message_id) DO NOTHING",
            (message_id, job_id),
        )

    async def close_at_pixverse(self, job_id: str, *, version: int | None = None) -> bool:
        """True for the one call that closed it (a message seen twice acts once); with
        ``version``, only while the job is still where that read saw it (not moved since)."""
        if version is None:
            return await self._db.execute(
                "UPDATE jobs SET pixverse_open = 0 WHERE job_id = ? AND pixverse_open = 1", (job_id,)
            ) > 0
        return await self._db.execute(
            "UPDATE jobs SET pixverse_open = 0 WHERE job_id = ? AND pixverse_open = 1 AND version = ?", (job_id, version)
        ) > 0

    async def close_stale_at_pixverse(self, *, before: float) -> int:
        return await self._db.execute(
            "UPDATE jobs SET pixverse_open = 0 WHERE pixverse_open = 1 AND slot_held = 0 AND updated_at < ?", (before,)
        )

    async def timed_out(self, *, now: float, timeout: float) -> list[Job]:
        """Jobs past their timeout: counted from submission to PixVerse, or, for a job not
        sent yet, from when it got its slot (updated_at), or from when it began to wait."""
        # Two halves, each on its partial index (only live rows): one OR over both read the table.
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE slot_held = 1 AND COALESCE(submitted_at, updated_at) < ?"
            " UNION ALL SELECT * FROM jobs WHERE queued = 1 AND created_at < ? ORDER BY seq",
            (now - timeout, now - timeout),
        )
        return [job_from_row(row) for row in rows]

    async def waiting(self, guild_id: str) -> list[Job]:
        rows = await self._db.fetchall("SELECT * FROM jobs WHERE guild_id = ? AND queued = 1 ORDER BY seq", (guild_id,))
        return [job_from_row(row) for row in rows]

    async def ended_since(self, guild_id: str, *, since: float) -> EndedJobs:
        rows = await self._db.fetchall(
            "SELECT status, error, submitted_at, updated_at FROM jobs"
            " WHERE guild_id = ? AND state = 'done' AND updated_at >= ?", (guild_id, since))
        return ended_jobs([tuple(row) for row in rows])

    async def orphaned(self, live_owners: list[str]) -> list[Job]:
        """Jobs holding a slot whose owner is not among the live processes."""
        if live_owners:
            placeholders = ",".join("?" * len(live_owners))
            where = f"(owner IS NULL OR owner NOT IN ({placeholders}))"
        else:
            where = "1"
        rows = await self._db.fetchall(f"SELECT * FROM jobs WHERE slot_held = 1 AND {where} ORDER BY seq", live_owners)
        return [job_from_row(row) for row in rows]

    async def claim(self, job: Job, owner: str) -> bool:
        """Takes over a dead process's job; only one live process can win it."""
        return await self._db.execute(
            "UPDATE jobs SET owner = ? WHERE job_id = ? AND slot_held = 1 AND owner IS ?",
            (owner, job.job_id, job.owner),
        ) > 0

    async def unowned(self, limit: int = 100, *, shards: tuple[int, frozenset[int]] | None = None) -> list[Job]:
        """Jobs placed (not yet sent) that no process runs yet: placed for another shard's process."""
        where, params = _of_shards(shards)
        rows = await self._db.fetchall(
            f"SELECT * FROM jobs WHERE slot_held = 1 AND state = 'placed' AND owner IS NULL{where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [job_from_row(row) for row in rows]

    async def guilds_with_waiting_jobs(self) -> list[str]:
        rows = await self._db.fetchall("SELECT DISTINCT guild_id FROM jobs WHERE queued = 1")
        return [row[0] for row in rows]

    async def live_counts(self) -> tuple[int, int]:
        row = await self._db.fetchone(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE slot_held = 1), (SELECT COUNT(*) FROM jobs WHERE queued = 1)"
        )
        return int(row[0]), int(row[1])

    async def purge(self, *, before: float, batch: int = PURGE_BATCH) -> int:
        """Deletes ended jobs older than the retention period, ``batch`` rows a transaction.

        A day's backlog in one DELETE held SQLite's write lock for seconds, and every placement
        and API write waited; in batches, other work gets the lock between them."""
        deleted = 0
        while True:
            count = await self._db.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE created_at < ? AND state = 'done'"
                " AND pixverse_open = 0 ORDER BY created_at LIMIT ?)",
                (before, batch),
            )
            deleted += count
            if count < batch:
                return deleted
            await asyncio.sleep(0)  # let queued work in between

    # --- process leases -------------------------------------------------------------

    async def heartbeat(self, owner: str, now: float, *, follows: str | None = None) -> None:
        await self._db.execute(LEASE, (owner, now, follows))

    async def live_owners(self, *, now: float, ttl: float) -> list[str]:
        return list(await self.live_follows(now=now, ttl=ttl))

    async def live_follows(self, *, now: float, ttl: float) -> dict[str, str | None]:
        rows = await self._db.fetchall("SELECT owner, follows FROM processes WHERE heartbeat_at >= ?", (now - ttl,))
        return {row[0]: row[1] for row in rows}

    async def forget_owner(self, owner: str) -> None:
        await self._db.execute("DELETE FROM processes WHERE owner = ?", (owner,))

    async def forget_dead_owners(self, *, now: float, ttl: float) -> None:
        await self._db.execute("DELETE FROM processes WHERE heartbeat_at < ?", (now - ttl * 10,))


async def _with_images(tx: Tx, new: NewJob, placing: Awaitable[T]) -> T:
    """Places a job (``placing``: a Placement or a Job) and stores its images in the same transaction."""
    placed = await placing
    job = placed.job if isinstance(placed, Placement) else placed
    for param, image in new.images.items():
        await tx.execute("INSERT INTO job_images (job_id, param, filename, data) VALUES (?, ?, ?, ?)",
                         (job.job_id, param, image.filename, image.data))
    return placed
