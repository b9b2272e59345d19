"""Jobs on PostgreSQL: placement guarded by a per-server advisory lock, and the rest of the JobStore.

**What guards capacity.** Every transaction that may put a job on an account (:meth:`place`,
:meth:`place_on`, :meth:`promote_waiting`, :meth:`requeue`, and the promotion after a release)
first takes ``pg_advisory_xact_lock`` on its server (a transaction-scoped lock, released by its
commit or rollback), and only then counts the accounts' load. Under READ COMMITTED each later
statement of that transaction reads what was committed before it started, so it sees every
placement that held the lock before it: no two placements of a server, in any process on any
machine, can both take the same free slot. Freeing a slot needs no lock (one ``UPDATE`` that
matches once). The lock is per server: servers never wait for each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Collection
from typing import Any

import asyncpg

from bot.dispatch.images import Image
from bot.dispatch.models import Job, JobStatus, job_from_row, new_job_id
from bot.store.decoded import DecodedJobs
from bot.store.conditions import asked_through
from bot.store import JOBS_TOPIC, EndedJobs, NewJob, Placement, Released, ended_jobs, rules
from bot.store.postgres.database import Database, channel_of

log = logging.getLogger(__name__)

PURGE_BATCH = 500

# One key per server in pg_advisory_xact_lock's one-key space (migrations use the two-key one).
# Two servers whose ids hash alike only share a lock: slower for them, never wrong.
LOCK_SERVER = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

LEASE = (
    "INSERT INTO processes (owner, heartbeat_at, follows) VALUES ($1, $2, $3)"
    " ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, follows = excluded.follows"
)

_LOAD = "(SELECT COUNT(*) FROM jobs j WHERE j.account_channel_id = a.channel_id AND j.slot_held)"
_ACCOUNTS_WITH_LOAD = (
    f"SELECT a.channel_id, a.discord_user_id, a.max_jobs, a.in_rotation, a.error, {_LOAD} AS executing FROM accounts a"
)
_JOB_COLUMNS = (
    "job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,"
    " request_channel_id, verb, params, parent_job_id, status, state, owner, created_at, updated_at"
)
# $1 job_id, $2 guild, $3 requester, $4 asked_in, $5 verb, $6 params, $7 parent, $8 owner, $9 now
_NEW = "$1, $2, {account}, {user}, {max_jobs}, $3, $4, $5, $6, $7, 'created', {state}, {owner}, $9, $9"

# The fast paths, one round trip each: lock, count and insert inside one server-side function
# (migrations/postgres/0002_placement_functions.sql); no row when the slower path must decide.
# $10: the pick (or the account); $11: the channel to announce an unowned job on, or NULL.
PLACE_FREE = "SELECT * FROM pixverse_place_free($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
PLACE_ON_FREE = "SELECT * FROM pixverse_place_on_free($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
# Release under the server's lock, one round trip (the same migration).
RELEASE = "SELECT * FROM pixverse_release($1, $2, $3, $4, $5::jsonb)"
# What a release may set beside the status (bot.store.result_fields and the errors).
RELEASE_FIELDS = frozenset({"pixverse_open", "message_id", "content", "attachments", "buttons", "error",
                            "error_details", "message_timestamp", "embeds"})
QUEUE = (
    f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ("
    + _NEW.format(account="NULL", user="NULL", max_jobs="NULL", state="'waiting'", owner="$8") + ") RETURNING *"  # $8: None
)
# Puts a job on an account afresh: placed, not sent, a new version.
# Only from where the caller's read saw the job ({where}). Releases take the server's lock too, so
# the job cannot have ended since that read; the condition keeps it so if that ever changes.
_ASSIGN = (
    "UPDATE jobs SET state = 'placed', version = version + 1, account_channel_id = $2, account_user_id = $3,"
    " max_jobs = $4, owner = $5, updated_at = $6{more} WHERE job_id = $1 AND {where} RETURNING *"
)


def _announce_on(owner: str | None) -> str | None:
    """The channel a job placed with this owner is announced on: only a job with no owner is."""
    return channel_of(JOBS_TOPIC) if owner is None else None


async def _announce_unowned(conn: asyncpg.Connection, guild_id: str, owner: str | None) -> None:
    """A job placed with no owner (its server's shard runs elsewhere): every listening process
    hears of it when the transaction commits (``NOTIFY`` is transactional), and the one of
    the server's shard takes it."""
    if owner is None:
        await conn.execute("SELECT pg_notify($1, $2)", channel_of(JOBS_TOPIC), guild_id)


def _new_args(new: NewJob, *, now: float, owner: str | None) -> list[Any]:
    return [new_job_id(), new.guild_id, new.requester_id, new.request_channel_id, new.verb.value,
            json.dumps(new.params, ensure_ascii=False), new.parent_job_id, owner, now]


async def _executing_ids(conn: asyncpg.Connection, where: str, value: str) -> list[str]:
    rows = await conn.fetch(f"SELECT job_id FROM jobs WHERE {where} = $1 AND slot_held ORDER BY seq", value)
    return [row[0] for row in rows]


async def _free_accounts(conn: asyncpg.Connection, guild_id: str) -> list[asyncpg.Record]:
    return rules.free_accounts(await conn.fetch(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = $1 AND a.in_rotation",
                                                guild_id))


async def _assign(conn: asyncpg.Connection, job_id: str, account: Any, *, owner: str | None, now: float,
                  where: str, more: str = "", extra: tuple = ()) -> Job | None:
    row = await conn.fetchrow(
        _ASSIGN.format(more=more, where=where), job_id, account["channel_id"], account["discord_user_id"],
        account["max_jobs"], owner, now, *extra,
    )
    return None if row is None else job_from_row(row)


async def _promote(conn: asyncpg.Connection, guild_id: str, *, now: float, owner: str,
                   rng: random.Random) -> list[Job]:
    """Gives the server's free slots to its oldest waiting jobs (the caller holds the server's lock)."""
    promoted = []
    while True:
        waiting = await conn.fetchval(
            "SELECT job_id FROM jobs WHERE guild_id = $1 AND queued ORDER BY seq LIMIT 1", guild_id
        )
        if waiting is None:
            return promoted
        free = await _free_accounts(conn, guild_id)
        if not free:
            return promoted
        job = await _assign(conn, waiting, rng.choice(free), owner=owner, now=now, where="state = 'waiting'")
        if job is None:
            return promoted
        promoted.append(job)
        if len(promoted) == 1:
            await _announce_unowned(conn, guild_id, owner)


def _of_shards(shards: tuple[int, frozenset[int]] | None, *, first: int) -> tuple[str, list[Any]]:
    """The condition keeping the jobs of the servers of these shards (shard count, shard ids;
    bot.shards.shard_of), its parameters numbered from ``$first``; nothing for None, every server."""
    if shards is None:
        return "", []
    count, ids = shards
    return f" AND ((guild_id::bigint >> 22) % ${first}) = ANY(${first + 1}::bigint[])", [count, sorted(ids)]


class JobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._decoded = DecodedJobs()  # the polled path's memo (bot/store/decoded.py)

    async def _fetch_jobs(self, sql: str, *args: Any) -> list[Job]:
        return [job_from_row(row) for row in await self._db.fetch(sql, *args)]

    # --- placement: each under its server's lock ------------------------------------------

    async def place(self, new: NewJob, *, now: float, owner: str | None, queue_size: int,
                    rng: random.Random) -> Placement:
        args = _new_args(new, now=now, owner=owner)
        if not new.images:
            # Most often a slot is free and nobody waits: one round trip, the lock held only while it runs.
            row = await self._db.fetchrow(PLACE_FREE, *args, rng.random(), _announce_on(owner))
            if row is not None:
                return Placement(job_from_row(row), None)
        # Otherwise (or with images, stored in the same transaction) the placement, the refusal
        # or the queue, decided under the server's lock.
        async with self._db.transaction() as conn:
            placed = await self._place_locked(conn, new, args, owner=owner, queue_size=queue_size, rng=rng)
            await _store_images(conn, placed.job.job_id, new)
            return placed

    async def _place_locked(self, conn: asyncpg.Connection, new: NewJob, args: list[Any], *, owner: str | None,
                            queue_size: int, rng: random.Random) -> Placement:
        await conn.execute(LOCK_SERVER, new.guild_id)
        accounts = await conn.fetch(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = $1", new.guild_id)
        waiting = await conn.fetchval("SELECT COUNT(*) FROM jobs WHERE guild_id = $1 AND queued", new.guild_id)
        free = await rules.new_job(accounts, waiting, queue_size=queue_size,
                                   executing_ids=lambda: _executing_ids(conn, "guild_id", new.guild_id))
        if free and not waiting:
            # A release (which takes no lock) freed a slot after the first try read: take it.
            await _announce_unowned(conn, new.guild_id, owner)
            return Placement(await _insert_placed(conn, args, rng.choice(free)), None)
        args[7] = None  # a waiting job has no owner
        return Placement(job_from_row(await conn.fetchrow(QUEUE, *args)), waiting + 1)

    async def place_on(self, new: NewJob, *, account_channel_id: str, now: float, owner: str | None) -> Job:
        args = _new_args(new, now=now, owner=owner)
        if not new.images:
            row = await self._db.fetchrow(PLACE_ON_FREE, *args, account_channel_id, _announce_on(owner))
            if row is not None:
                return job_from_row(row)
        async with self._db.transaction() as conn:
            job = await self._place_on_locked(conn, new, args, account_channel_id=account_channel_id, owner=owner)
            await _store_images(conn, job.job_id, new)
            return job

    async def _place_on_locked(self, conn: asyncpg.Connection, new: NewJob, args: list[Any], *,
                               account_channel_id: str, owner: str | None) -> Job:
        await conn.execute(LOCK_SERVER, new.guild_id)
        account = await conn.fetchrow(_ACCOUNTS_WITH_LOAD + " WHERE a.guild_id = $1 AND a.channel_id = $2",
                                      new.guild_id, account_channel_id)
        account = await rules.button(
            account, account_channel_id,
            executing_ids=lambda: _executing_ids(conn, "account_channel_id", account_channel_id))
        # Free after all: a release (which takes no lock) freed it after the first try read.
        await _announce_unowned(conn, new.guild_id, owner)
        return await _insert_placed(conn, args, account)

    async def release(self, job_id: str, status: JobStatus, *, now: float,
                      fields: dict[str, Any] | None = None, expected: Job | None = None) -> Released:
        assert status not in (JobStatus.CREATED, JobStatus.STARTED, JobStatus.PROGRESS)
        fields = dict(fields or {})
        unknown = set(fields) - RELEASE_FIELDS
        if unknown:
            raise ValueError(f"a release cannot set {sorted(unknown)}")
        if "pixverse_open" in fields:
            fields["pixverse_open"] = bool(fields["pixverse_open"])
        # The function keeps final_pending for a member's job (0007), final_reply for an HTTP API job
        # with a replyUrl (0008): both have an end to tell (JobStore.final_not_shown).
        fields["final_pending"] = True
        fields["final_reply"] = True
        row = await self._db.fetchrow(RELEASE, job_id, None if expected is None else expected.version,
                                      status.value, now, json.dumps(fields, ensure_ascii=False))
        if row is None:
            return Released(None)
        return Released(job_from_row(row["released"]), row["others_waiting"])

    async def promote_waiting(self, guild_id: str, *, now: float, owner: str | None,
                              rng: random.Random) -> list[Job]:
        if await self._db.fetchval("SELECT 1 FROM jobs WHERE guild_id = $1 AND queued LIMIT 1", guild_id) is None:
            return []
        async with self._db.transaction() as conn:
            await conn.execute(LOCK_SERVER, guild_id)
            return await _promote(conn, guild_id, now=now, owner=owner, rng=rng)

    async def requeue(self, expected: Job, *, now: float, owner: str, rng: random.Random, error: str,
                      allow_same: bool = False) -> tuple[Job | None, list[Job]]:
        async with self._db.transaction() as conn:
            await conn.execute(LOCK_SERVER, expected.guild_id)
            row = await conn.fetchrow("SELECT * FROM jobs WHERE job_id = $1 AND slot_held AND version = $2",
                                      expected.job_id, expected.version)
            if row is None:
                return None, []
            free = [a for a in await _free_accounts(conn, row["guild_id"])
                    if a["channel_id"] != row["account_channel_id"]]
            if not free and allow_same:
                own = await conn.fetchrow(_ACCOUNTS_WITH_LOAD + " WHERE a.channel_id = $1 AND a.in_rotation",
                                          row["account_channel_id"])
                free = [own] if own is not None else []
            if not free:
                return None, []
            await _announce_unowned(conn, row["guild_id"], owner)
            moved = await _assign(
                conn, expected.job_id, rng.choice(free), owner=owner, now=now,
                where="state IN ('placed', 'submitted') AND version = $8",
                more=", status = 'created', submitted_at = NULL, message_id = NULL, progress = NULL,"
                     " pixverse_open = FALSE, placement_attempts = placement_attempts + 1, error_details = $7",
                extra=(error, expected.version),
            )
            if moved is None:
                return None, []
            return moved, await _promote(conn, row["guild_id"], now=now, owner=owner, rng=rng)

    async def queue_position(self, job: Job) -> int | None:
        if not job.queued:
            return None
        return int(await self._db.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE guild_id = $1 AND queued AND seq <= $2", job.guild_id, job.seq
        ))

    # --- reading ------------------------------------------------------------------------------

    async def images(self, job_id: str) -> dict[str, Image]:
        rows = await self._db.fetch("SELECT param, filename, data FROM job_images WHERE job_id = $1", job_id)
        return {row["param"]: Image(row["filename"], bytes(row["data"])) for row in rows}

    async def get(self, job_id: str, guild_id: str | None = None) -> Job | None:
        if guild_id is None:
            row = await self._db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
        else:
            row = await self._db.fetchrow("SELECT * FROM jobs WHERE job_id = $1 AND guild_id = $2", job_id, guild_id)
        return None if row is None else job_from_row(row)

    async def get_with_token_last4(self, job_id: str, guild_id: str) -> tuple[Job, str | None] | None:
        row = await self._db.fetchrow(
            "SELECT j.*, a.token_last4 AS account_token_last4 FROM jobs j LEFT JOIN accounts a"
            " ON a.channel_id = j.account_channel_id AND a.guild_id = j.guild_id WHERE j.job_id = $1 AND j.guild_id = $2",
            job_id, guild_id,
        )
        if row is None:
            return None
        return self._decoded.of(row)

    async def executing(self, guild_id: str) -> list[Job]:
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE guild_id = $1 AND slot_held"
            " UNION ALL SELECT * FROM jobs WHERE guild_id = $1 AND queued ORDER BY seq", guild_id,
        )

    async def holding_slots(self, account_channel_id: str) -> list[Job]:
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE account_channel_id = $1 AND slot_held ORDER BY seq", account_channel_id
        )

    async def open_at_pixverse(self, account_channel_id: str) -> list[Job]:
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE account_channel_id = $1 AND pixverse_open ORDER BY seq", account_channel_id
        )

    async def waiting(self, guild_id: str) -> list[Job]:
        return await self._fetch_jobs("SELECT * FROM jobs WHERE guild_id = $1 AND queued ORDER BY seq", guild_id)

    async def ended_since(self, guild_id: str, *, since: float) -> EndedJobs:
        rows = await self._db.fetch(
            "SELECT status, error, submitted_at, updated_at FROM jobs"
            " WHERE guild_id = $1 AND state = 'done' AND updated_at >= $2", guild_id, since)
        return ended_jobs([tuple(row) for row in rows])

    async def of_member(self, guild_id: str, requester_id: str, *, limit: int = 10) -> list[Job]:
        """The member's last ``limit`` jobs in the server, newest first, ended ones included."""
        if limit <= 0:
            return []
        # The index jobs_member (guild_id, requester_id, seq) read backwards: ``limit`` rows, no sort.
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE guild_id = $1 AND requester_id = $2 ORDER BY seq DESC LIMIT $3",
            guild_id, requester_id, limit,
        )

    async def set_status_message(self, job_id: str, message_id: str, *, in_channel: bool) -> bool:
        """Records the job's status message, whatever its state; nothing else changes. No server
        lock and no announcement: no trigger of ``jobs`` notifies (only placement's pg_notify calls
        do), and ``job_images_end`` fires on updates of ``state`` only."""
        return await self._db.execute(
            "UPDATE jobs SET status_message_id = $2, status_message_in_channel = $3 WHERE job_id = $1",
            job_id, message_id, bool(in_channel),
        ) > 0

    async def mark_final_shown(self, job_id: str) -> bool:
        return await self._db.execute(
            "UPDATE jobs SET final_pending = FALSE WHERE job_id = $1 AND final_pending", job_id,
        ) > 0

    async def final_not_shown(self, *, ended_before: float, ended_after: float, limit: int = 100,
                              shards: tuple[int, frozenset[int]] | None = None,
                              through_api: bool | None = None) -> list[Job]:
        if limit <= 0:
            return []
        # The partial index jobs_final_pending, by the time each job ended.
        where, params = _of_shards(shards, first=4)
        return await self._fetch_jobs(
            f"SELECT * FROM jobs WHERE final_pending AND updated_at < $1 AND updated_at >= $2{where}"
            f"{asked_through(through_api)}"
            " ORDER BY updated_at DESC LIMIT $3",
            ended_before, ended_after, limit, *params,
        )

    # --- a job's life at PixVerse ---------------------------------------------------------------

    async def mark_submitted(self, job: Job, now: float, *, owner: str) -> bool:
        return await self._db.execute(
            "UPDATE jobs SET state = 'submitted', submitted_at = $1, pixverse_open = TRUE, updated_at = $1"
            " WHERE job_id = $2 AND state = 'placed' AND owner = $3 AND version = $4",
            now, job.job_id, owner, job.version,
        ) > 0

    async def record_progress(self, job_id: str, status: JobStatus, *, now: float, message_id: str | None,
                              progress: int | None, content: str | None) -> Job | None:
        """started/progress while the job still executes; the job is returned only to the call
        that moved it out of ``created`` (the member hears "started" once)."""
        async with self._db.transaction() as conn:
            started = await conn.fetchrow(
                "UPDATE jobs SET status = 'started', updated_at = $1 WHERE job_id = $2 AND state = 'submitted'"
                " AND status = 'created' RETURNING *", now, job_id,
            )
            await conn.execute(
                "UPDATE jobs SET status = $1, message_id = COALESCE($2, message_id), progress = COALESCE($3, progress),"
                " content = COALESCE($4, content), updated_at = $5 WHERE job_id = $6 AND state = 'submitted'",
                status.value, message_id, progress, content, now, job_id,
            )
        return None if started is None else job_from_row(started)

    async def record_message_progress(
        self, message_id: str, status: JobStatus, *, account_channel_id: str, guild_id: str,
        for_users: Collection[str], now: float, progress: int | None, content: str | None,
    ) -> Job | None:
        """record_progress's second write to the job of an attributed message, guarded by what the
        general path reads first (the message's job, still on this account and past ``created``; the
        account's user), in one statement."""
        users = list(dict.fromkeys(for_users))
        if not users:
            return None
        row = await self._db.fetchrow(
            "UPDATE jobs SET status = $1, message_id = $2, progress = COALESCE($3, progress),"
            " content = COALESCE($4, content), updated_at = $5"
            " WHERE job_id = (SELECT job_id FROM pixverse_messages WHERE message_id = $2) AND account_channel_id = $6"
            " AND state = 'submitted' AND status <> 'created' AND EXISTS (SELECT 1 FROM accounts"
            " WHERE channel_id = $6 AND guild_id = $7 AND discord_user_id = ANY($8::text[])) RETURNING *",
            status.value, message_id, progress, content, now, account_channel_id, guild_id, users,
        )
        return None if row is None else job_from_row(row)

    async def job_of_message(self, message_id: str) -> str | None:
        return await self._db.fetchval("SELECT job_id FROM pixverse_messages WHERE message_id = $1", message_id)

    async def remember_message(self, message_id: str, job_id: str) -> None:
        await self._db.execute(
            "INSERT INTO pixverse_messages (message_id, job_id) VALUES ($1, $2) ON CONFLICT (message_id) DO NOTHING",
            message_id, job_id,
        )

    async def close_at_pixverse(self, job_id: str, *, version: int | None = None) -> bool:
        return await self._db.execute(
            "UPDATE jobs SET pixverse_open = FALSE WHERE job_id = $1 AND pixverse_open"
            " AND ($2::integer IS NULL OR version = $2)", job_id, version,
        ) > 0

    # --- periodic work and leases -----------------------------------------------------------------

    async def close_stale_at_pixverse(self, *, before: float) -> int:
        return await self._db.execute(
            "UPDATE jobs SET pixverse_open = FALSE WHERE pixverse_open AND NOT slot_held AND updated_at < $1", before
        )

    async def timed_out(self, *, now: float, timeout: float) -> list[Job]:
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE slot_held AND COALESCE(submitted_at, updated_at) < $1"
            " UNION ALL SELECT * FROM jobs WHERE queued AND created_at < $1 ORDER BY seq", now - timeout,
        )

    async def orphaned(self, live_owners: list[str]) -> list[Job]:
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE slot_held AND (owner IS NULL OR NOT owner = ANY($1::text[])) ORDER BY seq",
            live_owners,
        )

    async def claim(self, job: Job, owner: str) -> bool:
        return await self._db.execute(
            "UPDATE jobs SET owner = $1 WHERE job_id = $2 AND slot_held AND owner IS NOT DISTINCT FROM $3",
            owner, job.job_id, job.owner,
        ) > 0

    async def unowned(self, limit: int = 100, *, shards: tuple[int, frozenset[int]] | None = None) -> list[Job]:
        where, params = _of_shards(shards, first=2)
        return await self._fetch_jobs(
            f"SELECT * FROM jobs WHERE state = 'placed' AND owner IS NULL{where} ORDER BY seq LIMIT $1",
            limit, *params,
        )

    async def guilds_with_waiting_jobs(self) -> list[str]:
        return [row[0] for row in await self._db.fetch("SELECT DISTINCT guild_id FROM jobs WHERE queued")]

    async def live_counts(self) -> tuple[int, int]:
        row = await self._db.fetchrow(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE slot_held), (SELECT COUNT(*) FROM jobs WHERE queued)"
        )
        return int(row[0]), int(row[1])

    async def purge(self, *, before: float, batch: int = PURGE_BATCH) -> int:
        deleted = 0
        while True:
            count = await self._db.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE created_at < $1 AND state = 'done'"
                " AND NOT pixverse_open ORDER BY created_at LIMIT $2)", before, batch,
            )
            deleted += count
            if count < batch:
                return deleted
            await asyncio.sleep(0)

    async def heartbeat(self, owner: str, now: float, *, follows: str | None = None) -> None:
        await self._db.execute(LEASE, owner, now, follows)

    async def live_owners(self, *, now: float, ttl: float) -> list[str]:
        return list(await self.live_follows(now=now, ttl=ttl))

    async def live_follows(self, *, now: float, ttl: float) -> dict[str, str | None]:
        return {row[0]: row[1] for row in await self._db.fetch(
            "SELECT owner, follows FROM processes WHERE heartbeat_at >= $1", now - ttl
        )}

    async def forget_owner(self, owner: str) -> None:
        await self._db.execute("DELETE FROM processes WHERE owner = $1", owner)

    async def forget_dead_owners(self, *, now: float, ttl: float) -> None:
        await self._db.execute("DELETE FROM processes WHERE heartbeat_at < $1", now - ttl * 10)


async def _store_images(conn: asyncpg.Connection, job_id: str, new: NewJob) -> None:
    for param, image in new.images.items():
        await conn.execute("INSERT INTO job_images (job_id, param, filename, data) VALUES ($1, $2, $3, $4)",
                           job_id, param, image.filename, image.data)


async def _insert_placed(conn: asyncpg.Connection, args: list[Any], account: Any) -> Job:
    row = await conn.fetchrow(
        f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ("
        + _NEW.format(account="$10", user="$11", max_jobs="$12", state="'placed'", owner="$8") + ") RETURNING *",
        *args, account["channel_id"], account["discord_user_id"], account["max_jobs"],
    )
    return job_from_row(row)

