"""The store port: what the services ask of storage, in domain terms. No SQL, no driver here.

One adapter per engine implements it (``bot/store/sqlite/`` today). The contract each adapter
must keep, whatever its engine:

- **Capacity is guarded explicitly.** ``place``, ``place_on``, ``release``, ``requeue`` and
  ``promote_waiting`` each run in one transaction that no other placement for the same
  server can interleave with: SQLite takes its database-wide write lock (``BEGIN
  IMMEDIATE``); a server database must lock the server's account rows, or take a
  transaction-scoped lock per server. Never an isolation level hoped for.
  A release frees the slot in its own transaction and says whether jobs of its server wait;
  the caller then gives the free slots to the oldest of them (``promote_waiting``, naming
  the process that will run them). Meanwhile a new job of that server queues behind them
  rather than taking the slot.
- **Release is exactly once.** Of any number of racing paths that end a job (completion,
  cancel, timeout, account removal), one changes it; the others get ``Released(job=None)``.
- **Compare-and-set by version.** ``Job.version`` changes each time a job is put on an
  account (placed from the queue, moved); ``release(expected=)``, ``requeue`` and
  ``mark_submitted`` apply only to the version they were given.
- **A job's state is one value** (``JobState``), and the store refuses a job whose account,
  owner or submission time contradicts it.
- **A job's owner is a process holding a lease** (``heartbeat`` first); forgetting a lease
  leaves that process's jobs with no owner, for recovery to claim. A job may also be placed
  with no owner (its server's shard runs in another process): ``unowned`` finds such jobs
  for that process to ``claim``, and an engine that can tell other processes at once
  (``Database.listen``, topic :data:`JOBS_TOPIC`) does so when it places one.
- **The queue is first in, first out per server**, and the choice among accounts with a free
  slot is uniform.
- **A job's images live exactly as long as it does**: stored in the transaction that places it
  (a refused job leaves none), readable until it ends, deleted when it ends.
- **Periodic queries cost O(work due)**: timed out, orphaned, waiting, purge (in bounded
  batches) read only live rows.

Errors of the store that a user should hear are :class:`ApiError`s raised by the adapter
(404/503/429 from placement) or the domain exceptions below.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from bot.accounts.crypto import TokenCipher
from bot.accounts.models import AccountConfig
from bot.dispatch.images import Image
from bot.dispatch.models import Job, JobStatus, Verb
from bot.errors import ApiError

# What Database.listen can tell: a job was placed with no owner (payload: its server id); a
# server's API tokens were revoked (payload: the server id).
JOBS_TOPIC = "jobs"
# A member's job changed in a process that does not follow its server (a timeout found by any
# process's sweep, a cancel through another process's HTTP API): its id, for the process that does,
# which edits the member's message.
JOB_TOLD_TOPIC = "job_told"
TOKENS_REVOKED_TOPIC = "api_tokens_revoked"

NO_ACCOUNTS = "No PixVerse account is configured in this server; a server manager can add one with /pixverse-account"
NONE_IN_ROTATION = (
    "Every PixVerse account of this server is out of rotation; a server manager can see why with"
    " /pixverse-accounts and put one back with /pixverse-account-reset"
)
BUSY = "All PixVerse accounts are busy"
EXECUTING_IDS_SHOWN = 25


@dataclass(frozen=True)
class NewJob:
    guild_id: str
    requester_id: str
    request_channel_id: str
    verb: Verb
    params: dict[str, Any]
    parent_job_id: str | None = None
    # Images the job sends (animate, meme_face), by parameter name: stored with the job in the
    # same transaction, deleted by the store when the job ends (``JobStore.images``).
    images: Mapping[str, Image] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    job: Job
    queue_position: int | None  # None: placed on an account and ready to run


@dataclass(frozen=True)
class Released:
    job: Job | None  # the job as it ended; None when it had already ended (nothing changed)
    others_waiting: bool = False  # jobs of its server wait: the caller promotes them


def busy(error: str, executing: list[str]) -> ApiError:
    """The 429 of a server whose accounts are all busy, with its executing jobs."""
    shown = executing[:EXECUTING_IDS_SHOWN]
    details = f"{len(executing)} executing: " + ", ".join(shown) + (" …" if len(executing) > len(shown) else "")
    return ApiError(429, error, details, executingJobs=executing)


def result_fields(update: Any) -> dict[str, Any]:
    """The fields a final PixVerse message sets on its job, as ``release(fields=…)`` takes them
    (the schema's column names; lists as JSON text, as every engine stores them: ASCII, its
    escapes standing for whatever Discord sent, a NUL or a lone surrogate too)."""
    fields: dict[str, Any] = {"pixverse_open": False}
    if update.message_id is not None:
        fields["message_id"] = update.message_id
    if update.content is not None:
        fields["content"] = update.content
    if update.attachments:
        fields["attachments"] = json.dumps(list(update.attachments))
    if update.buttons:
        fields["buttons"] = json.dumps(list(update.buttons))
    if update.error is not None:
        fields["error"] = update.error
    if update.error_details is not None:
        fields["error_details"] = update.error_details
    if update.timestamp is not None:
        fields["message_timestamp"] = update.timestamp
    if update.embeds:
        fields["embeds"] = json.dumps(list(update.embeds))
    return fields



class DuplicateAccount(Exception):
    """Raised when the token (or its Discord user) is configured in another channel."""

    def __init__(self, other: AccountConfig) -> None:
        super().__init__(other.channel_id)
        self.other = other


async def duplicate_of(accounts: AccountStore, *, token: str, discord_user_id: str,
                       channel_id: str) -> DuplicateAccount | None:
    """After a save a unique index refused: the other channel's configuration with the same token
    or Discord user, as the error to raise; None when the refusal was something else."""
    other = await accounts.find_by_token(token) or await accounts.find_by_user(discord_user_id)
    return DuplicateAccount(other) if other is not None and other.channel_id != channel_id else None


class ChannelOwnedElsewhere(Exception):
    """The channel's configuration belongs to another server."""


@dataclass(frozen=True)
class ServerSettings:
    """A server's own choices about the bot (``/pixverse-settings``); a server that made none has these."""

    buttons: str = "requester"  # who may press a result's buttons: requester (and managers) or everyone
    alerts_channel_id: str | None = None  # where an account leaving or re-entering rotation is told; None: nowhere


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # a setting left as it is by ServerSettingsStore.set


def settings_changes(*, buttons: str | None, alerts_channel_id: str | None) -> dict[str, Any]:
    """The server_settings columns a ServerSettingsStore.set changes, with their values, for every adapter."""
    changes: dict[str, Any] = {} if buttons is None else {"buttons": buttons}
    if alerts_channel_id is not KEEP:
        changes["alerts_channel_id"] = alerts_channel_id
    return changes


def ended_jobs(rows: list[tuple[str, str | None, float | None, float]]) -> EndedJobs:
    """EndedJobs from (status, error, submitted_at, updated_at) of ended jobs, for every adapter."""
    from bot.dispatch.models import TIMED_OUT

    counts: dict[str, int] = {}
    runs: list[float] = []
    for status, error, submitted_at, updated_at in rows:
        key = "timed_out" if status == JobStatus.FAILED.value and error == TIMED_OUT else status
        counts[key] = counts.get(key, 0) + 1
        if status == JobStatus.COMPLETED.value and submitted_at is not None:
            runs.append(max(0.0, updated_at - submitted_at))
    return EndedJobs(counts, runs)


@dataclass(frozen=True)
class EndedJobs:
    """A server's jobs ended within some time: how many by final state (``completed``,
    ``failed``, ``moderated``, ``cancelled``, ``timed_out``), and the run times of the completed
    ones (seconds from PixVerse taking them to their end)."""

    counts: dict[str, int]
    run_seconds: list[float]


BUTTONS_SETTINGS = ("requester", "everyone")


@dataclass(frozen=True)
class Stores:
    """The stores of one database, as the services use them."""

    accounts: AccountStore
    jobs: JobStore
    tokens: TokenStore
    servers: ServerSettingsStore


class Database(Protocol):
    """One opened database of some engine: what the Core asks of it beside the stores."""

    engine: str  # "sqlite", "postgresql"
    name: str  # for logs and errors: a path, or a URL without its password
    write_problem: str | None  # why the last write was refused for good (room, I/O, read-only); None when fine

    def stores(self, cipher: TokenCipher) -> Stores: ...
    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...
    async def delete_meta(self, key: str) -> None: ...
    async def any_token_ciphertext(self) -> bytes | None: ...
    async def ping(self) -> None: ...
    async def probe_write(self) -> bool: ...

    async def clock(self) -> float:
        """The time by the database's clock, in seconds since the Unix epoch: the one clock that
        every process sharing the database can agree on (``bot.dispatch.clock.SharedClock``)."""

    async def listen(self, topic: str, callback: Callable[[str | None], None]) -> bool:
        """Calls ``callback(payload)`` when any process (this one included) announces on ``topic``,
        and ``callback(None)`` when announcements may have been missed (the listening connection
        was lost and is back). False when the engine announces nothing (SQLite): poll instead."""

    async def announce(self, topic: str, payload: str) -> bool:
        """Announces ``payload`` on ``topic`` to every listening process (this one included), now,
        outside any transaction. False when the engine announces nothing (SQLite)."""


class AccountStore(Protocol):
    """PixVerse account configurations; tokens are encrypted inside the adapter."""

    async def get(self, guild_id: str, channel_id: str) -> AccountConfig | None: ...
    async def list(self, guild_id: str) -> list[AccountConfig]: ...
    async def find_by_token(self, token: str) -> AccountConfig | None: ...
    async def find_by_user(self, discord_user_id: str) -> AccountConfig | None: ...
    async def upsert(self, *, guild_id: str, channel_id: str, token: str, discord_user_id: str,
                     max_jobs: int) -> AccountConfig: ...
    async def delete(self, guild_id: str, channel_id: str) -> bool: ...
    async def set_rotation(self, guild_id: str, channel_id: str, *, in_rotation: bool, error: str | None = None,
                           error_details: str | None = None) -> bool:
        """Puts an account back in rotation (clearing its reason), or takes it out with a reason:
        taking out changes only an account in rotation, in one statement, and is True only for
        the call that took it out (an account out already keeps its first reason)."""
    async def record_failure(self, channel_id: str) -> int: ...
    async def record_success(self, channel_id: str) -> None: ...
    async def in_rotation_count(self, guild_id: str) -> int: ...
    async def rotation_counts(self) -> tuple[int, int]:
        """Accounts of every server: (in rotation, out of rotation). Two counts, for /metrics."""
    async def channel_ids(self) -> set[str]:
        """The channel of every configured account, of every server (the gateway's filter keeps
        PixVerse's messages in these). One read of a column: called at startup and now and then."""
    async def decrypt_token(self, guild_id: str, channel_id: str) -> str | None: ...


class ServerSettingsStore(Protocol):
    """Each server's settings; the defaults for a server that set none."""

    async def get(self, guild_id: str) -> ServerSettings: ...
    async def set(self, guild_id: str, *, buttons: str | None = None,
                  alerts_channel_id: str | None = KEEP) -> ServerSettings:
        """Changes the settings given (``buttons`` None and ``alerts_channel_id`` KEEP: as they are)."""


class TokenStore(Protocol):
    """HTTP API tokens: created per server, kept only as a hash."""

    async def create(self, guild_id: str, created_by: str) -> str: ...
    async def guild_of(self, token: str) -> str | None: ...
    async def revoke_all(self, guild_id: str) -> int: ...
    def forget(self, guild_id: str | None = None) -> None:
        """Drops what this process remembers of a server's tokens (of all with None): another
        process revoked them."""


class JobStore(Protocol):
    """PixVerse jobs: placement on accounts' capacity, their state, message attribution, leases."""

    # placement (capacity guarded, see the module's contract)
    async def place(self, new: NewJob, *, now: float, owner: str | None, queue_size: int,
                    rng: random.Random) -> Placement: ...
    async def place_on(self, new: NewJob, *, account_channel_id: str, now: float, owner: str | None) -> Job: ...
    async def release(self, job_id: str, status: JobStatus, *, now: float,
                      fields: dict[str, Any] | None = None, expected: Job | None = None) -> Released: ...
    async def promote_waiting(self, guild_id: str, *, now: float, owner: str | None,
                              rng: random.Random) -> list[Job]: ...
    async def requeue(self, expected: Job, *, now: float, owner: str | None, rng: random.Random, error: str,
                      allow_same: bool = False) -> tuple[Job | None, list[Job]]: ...
    async def queue_position(self, job: Job) -> int | None: ...

    # reading
    async def get(self, job_id: str, guild_id: str | None = None) -> Job | None: ...
    async def get_with_token_last4(self, job_id: str, guild_id: str) -> tuple[Job, str | None] | None: ...
    async def executing(self, guild_id: str) -> list[Job]: ...
    async def holding_slots(self, account_channel_id: str) -> list[Job]: ...
    async def open_at_pixverse(self, account_channel_id: str) -> list[Job]: ...
    async def waiting(self, guild_id: str) -> list[Job]: ...
    async def ended_since(self, guild_id: str, *, since: float) -> EndedJobs: ...
    async def images(self, job_id: str) -> dict[str, Image]:
        """The images a job was placed with, by parameter name; none once it ended."""
    async def of_member(self, guild_id: str, requester_id: str, *, limit: int = 10) -> list[Job]:
        """That member's last ``limit`` jobs in that server, newest first (by ``seq``), ended ones
        included. An index lookup, not a scan of the server's history."""

    # the status message of a member's job (the one message the bot edits as the job moves)
    async def set_status_message(self, job_id: str, message_id: str, *, in_channel: bool) -> bool:
        """Records the job's status message (``in_channel``: posted in its request channel, else
        the reply to the member's interaction), replacing any recorded before. Changes nothing else
        (not ``updated_at``, ``version``, ``status`` or ``state``), works in any state, ended ones
        included, and wakes or announces nothing. False when the job does not exist."""

    # the end shown to the member (a crash, a refused write or a missed announcement between a
    # job's end and its message showing it is made good later: nothing is left at its last progress)
    async def mark_final_shown(self, job_id: str) -> bool:
        """Records that this ended job's end is told: the member's message shows it, or its replyUrl
        took it (ending a member's job, or an HTTP API job with a replyUrl, leaves it to tell). True
        for the call that recorded it; False when the job does not exist, has nothing to tell, or
        was recorded already. Changes nothing else (not ``updated_at`` or ``version``) and
        announces nothing."""
    async def final_not_shown(self, *, ended_before: float, ended_after: float, limit: int = 100,
                              shards: tuple[int, frozenset[int]] | None = None,
                              through_api: bool | None = None) -> list[Job]:
        """Jobs whose end is not recorded as told (members' jobs, HTTP API jobs with a replyUrl),
        ended in [``ended_after``, ``ended_before``), of the servers of ``shards`` (count, ids; None:
        every server), asked for through the HTTP API (``through_api`` True) or in Discord (False;
        None: both), the most recently ended first, at most ``limit``. Read from a partial index
        that holds only those jobs. Jobs a process of an earlier version ended are never among them."""

    # a job's life at PixVerse
    async def mark_submitted(self, job: Job, now: float, *, owner: str) -> bool: ...
    async def record_progress(self, job_id: str, status: JobStatus, *, now: float, message_id: str | None,
                              progress: int | None, content: str | None) -> Job | None: ...
    async def record_message_progress(self, message_id: str, status: JobStatus, *, account_channel_id: str,
                                      guild_id: str, for_users: Collection[str], now: float, progress: int | None,
                                      content: str | None) -> Job | None:
        """PixVerse's started/progress news in a message already attributed to a job, in one statement
        (a running job's progress edit reads nothing first). Written as :meth:`record_progress`'s
        second write (``message_id`` becomes the job's), only while the message's job executes on
        ``account_channel_id`` (not moved since) and is past ``created`` (the "started" notice is
        :meth:`record_progress`'s), and that channel's configuration, in ``guild_id``, is for one of
        ``for_users`` (the users the message is for). Returns the job as written, or None when any of
        that is not so and nothing was written (the caller then takes the general path)."""
    async def job_of_message(self, message_id: str) -> str | None: ...
    async def remember_message(self, message_id: str, job_id: str) -> None: ...
    async def close_at_pixverse(self, job_id: str, *, version: int | None = None) -> bool: ...

    # periodic work and leases (O(work due))
    async def close_stale_at_pixverse(self, *, before: float) -> int: ...
    async def timed_out(self, *, now: float, timeout: float) -> list[Job]: ...
    async def orphaned(self, live_owners: list[str]) -> list[Job]: ...
    async def claim(self, job: Job, owner: str) -> bool: ...
    async def unowned(self, limit: int = 100, *, shards: tuple[int, frozenset[int]] | None = None) -> list[Job]:
        """Placed jobs (not sent yet) that no process runs, oldest first; with ``shards`` (count, ids),
        only those of servers on these shards ((server id >> 22) % count in ids)."""
    async def guilds_with_waiting_jobs(self) -> list[str]: ...
    async def live_counts(self) -> tuple[int, int]:
        """Jobs of every server: (holding a slot, waiting in a queue). Counted on the partial
        indexes of live jobs, for /metrics."""
    async def purge(self, *, before: float) -> int: ...
    async def heartbeat(self, owner: str, now: float, *, follows: str | None = None) -> None:
        """Renews ``owner``'s lease, with what it follows (``bot.shards.claim``; kept as text)."""
    async def live_owners(self, *, now: float, ttl: float) -> list[str]: ...
    async def live_follows(self, *, now: float, ttl: float) -> dict[str, str | None]:
        """The live processes and what each follows, as written (None: a process of an earlier version)."""
    async def forget_owner(self, owner: str) -> None: ...
    async def forget_dead_owners(self, *, now: float, ttl: float) -> None: ...
