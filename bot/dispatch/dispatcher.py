"""The dispatcher: places jobs, hands them to PixVerse, and ends each one exactly once."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import statistics
import time
import uuid
from collections import deque
from dataclasses import replace
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from bot.accounts.crypto import mask_token
from bot.dispatch.backends.base import JobUpdate, PixverseBackend, SubmitError
from bot.store import AccountStore, EndedJobs, JobStore, NewJob, Placement, ServerSettingsStore, result_fields
from bot.dispatch.models import API_REQUESTER, FINAL, TIMED_OUT, Job, JobState, JobStatus, Verb
from bot.dispatch.catalogue import CATALOGUE
from bot.dispatch.images import Image
from bot.dispatch.validation import validate_button, validate_job_id
from bot.accounts.validation import echo, is_snowflake
from bot.errors import CONFIGURATION_NOT_FOUND, ApiError, StoreError
from bot.events import (
    ACCOUNT_OUT_OF_ROTATION, JOB_CANCELLED, JOB_COMPLETED, JOB_CREATED, JOB_FAILED, JOB_MODERATED, JOB_QUEUED,
    JOB_STARTED, JOB_TIMED_OUT, Events, job_fields,
)
from bot.logs import register_secrets
from bot.shards import clash, claim, describe, read_claim, shard_of

log = logging.getLogger(__name__)

RETENTION_SECONDS = 31 * 24 * 3600
OVERLOAD_RETRIES = 2
MAX_CONSECUTIVE_FAILURES = 3
# A 429's Retry-After counts on this run time until jobs have completed here; then on the median
# of the last RUN_TIMES_KEPT.
TYPICAL_RUN_SECONDS = 60.0
RETRY_AFTER_OVERDUE_SECONDS = 5.0
# Progress notices (members' status messages, replyUrl): at most one per job this often; jobs
# tracked at most.
PROGRESS_EVERY_SECONDS = 3.0
PROGRESS_TRACKED = 10_000
RUN_TIMES_KEPT = 50
# Jobs with no owner read per pickup (the servers of other shards' among them).
UNOWNED_BATCH = 500
# A placed job whose sending met an unreachable or busy database is tried again after these
# (doubling; the job's timeout ends it if the database stays away longer).
RUN_RETRY_FIRST_SECONDS = 1.0
RUN_RETRY_MAX_SECONDS = 30.0
# /healthz reports the sweep stalled past this many of its intervals, and at least this long.
STALLED_AFTER_SWEEPS = 5
STALLED_AFTER_SECONDS = 120.0
# A job whose end the store has but whose member's message does not show it (a crash between the
# two, a write Discord kept refusing, an announcement another process missed), or whose replyUrl did
# not take it (a crash before the POST, a receiver down for the live path's tries), is told again: looked
# for every SHOW_ENDS_SECONDS (and once at start), once its end is SHOW_GRACE_SECONDS old (the live
# path's retries have had their turn) and while it is under SHOW_ENDS_WITHIN_SECONDS old (an end
# told a day late is news to no one), the most recent first, at most SHOW_ENDS_BATCH a round of
# members' ends and as many of replyUrl ends: at most that many writes a minute to Discord, however
# many channels, after an outage of Discord.
SHOW_ENDS_SECONDS = 60.0
SHOW_GRACE_SECONDS = 60.0
SHOW_ENDS_WITHIN_SECONDS = 24 * 3600.0
SHOW_ENDS_BATCH = 100


class JobListener(Protocol):
    """Told when a member should hear about their job (started, and the final state). A listener
    that also has ``job_progressed(job)`` is told of PixVerse's progress, at most once every
    PROGRESS_EVERY_SECONDS per job."""

    async def job_changed(self, job: Job) -> None: ...


def _given(body: dict[str, Any], name: str) -> str | None:
    """A text field as v1 clients send it: absent, empty or blank all mean not given."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value) if isinstance(value, int) and not isinstance(value, bool) else None
        if value is None:
            raise ApiError(400, f"Param {name} must be a string")
    return value.strip() or None


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, f"Unable to locate job {job_id}")  # useapi's text


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def process_owner() -> str:
    """host:pid-namespace:pid:random. Host and pid namespace together say when a pid can be
    checked from here; two containers sharing a hostname have different namespaces."""
    return f"{socket.gethostname()}:{_pid_namespace()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    def __init__(
        self,
        jobs: JobStore,
        accounts: AccountStore,
        backend: PixverseBackend,
        *,
        queue_size: int = 0,
        job_timeout: float = 900.0,
        overload_retry_delay: float = 10.0,
        owner: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        clock_sync: Callable[[], Awaitable[None]] | None = None,
        listeners: list[JobListener] | None = None,
        shards: tuple[int, frozenset[int]] | None = None,
        lease_interval: float | None = None,
        lease_ttl: float | None = None,
        pickup_interval: float = 1.0,
        servers: ServerSettingsStore | None = None,
        events: Events | None = None,
    ) -> None:
        self.accounts = accounts
        self.events = events or Events()  # job.* and account.out_of_rotation (bot/events.py)
        # Taking accounts out of rotation, one at a time: account.out_of_rotation once per leaving.
        self.servers = servers  # who may press a result's buttons; None: the requester and managers
        self.jobs = jobs
        self.backend = backend
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.overload_retry_delay = overload_retry_delay
        # The sweep runs at least every min(30 s, timeout/4), so a job ends at most a
        # quarter of its timeout late. The lease is renewed by its own task every
        # lease_interval (LEASE_HEARTBEAT_SECONDS); one not renewed for lease_ttl
        # (LEASE_EXPIRY_SECONDS) is dead. Without settings: as often as the sweep, three missed.
        self.sweep_interval = min(30.0, job_timeout / 4)
        self.show_ends_interval = SHOW_ENDS_SECONDS
        self._retold: frozenset[str] = frozenset()  # the jobs show_ends told again last time
        self.show_grace = SHOW_GRACE_SECONDS
        self.lease_interval = lease_interval or self.sweep_interval
        self.lease_ttl = lease_ttl or 3 * self.lease_interval
        # The servers whose jobs this process follows: those of its gateway shards (only it
        # receives their PixVerse messages), as (shard count, shard ids). None: every server (one
        # process, or all shards here).
        self._shards = shards
        self._started = False
        # Jobs of followed servers placed elsewhere (an HTTP request to another process) wait
        # with no owner until this process takes them: told at once where the store notifies
        # (pickup()), looked for every pickup_interval all the same.
        self.pickup_interval = pickup_interval
        self._pickup_task: asyncio.Task | None = None
        self._run_times: deque[float] = deque(maxlen=RUN_TIMES_KEPT)  # of jobs completed here, for Retry-After
        self._progress_told: dict[str, float] = {}  # job id -> when its last progress notice went out
        self._pickup_again = False
        self.owner = owner or process_owner()
        self.rng = rng or random.SystemRandom()
        # The time of leases, timeouts and jobs: the database's (bot/dispatch/clock.py), whose
        # offset clock_sync measures again before each lease renewal.
        self.clock = clock
        self.clock_sync = clock_sync
        self.listeners: list[JobListener] = list(listeners or [])
        # Tells the process that follows a job's server about it (set by the Core where the engine
        # announces across processes); None: every job is told here.
        self.tell_elsewhere: Callable[[Job], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._notifications: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._closing = False
        self._leased = False
        # When the sweep under way began (None: none is), by ``monotonic``: a suspended machine or
        # a corrected wall clock is no stall. Tests replace it.
        self._sweeping_since: float | None = None
        self._clashes: dict[str, str] = {}  # live process -> why it must not run beside this one
        self.monotonic: Callable[[], float] = time.monotonic
        backend.bind(self)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        try:
            await self._hold_lease()
            await self.recover()
        except Exception:
            # e.g. the database stayed locked by another process: the sweep recovers later.
            log.exception("Recovery at startup failed; the next sweep tries again")
        try:
            await self.show_ends()
        except Exception:
            log.exception("Looking for ends not shown failed at startup; the next look is in %g s",
                          self.show_ends_interval)
        if not self._closing:
            self._loops = [
                asyncio.create_task(self._every(self.lease_interval, self._renew_lease), name="dispatcher lease"),
                asyncio.create_task(self._every(self.sweep_interval, self.sweep), name="dispatcher sweep"),
                asyncio.create_task(self._every(self.show_ends_interval, self.show_ends), name="dispatcher ends"),
            ]
            if self._shards is not None:
                self._loops.append(
                    asyncio.create_task(self._every(self.pickup_interval, self._take_unowned), name="dispatcher pickup")
                )

    def start_soon(self) -> None:
        """start() as a task that close() cancels, for callers that must not wait (on_ready)."""
        self._spawn(self.start(), "dispatcher start")

    async def close(self, *, notify_grace: float = 5.0) -> None:
        self._closing = True
        # A job that just ended is final in the database and will never be reported again:
        # give its members' messages a moment to go out before cancelling the rest.
        if self._notifications:
            await asyncio.wait(list(self._notifications), timeout=notify_grace)
        for task in list(self._notifications):
            task.cancel()
        # Until nothing is left: a task being cancelled may not spawn more (_spawn refuses).
        while self._tasks or self._loops:
            pending = [*self._tasks, *self._loops]
            self._loops = []
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.backend.close()
        # Jobs still executing stay in the database; dropping the lease lets the next
        # start (or another process) take them over at once instead of after the TTL.
        try:
            await self.jobs.forget_owner(self.owner)
        except Exception as exc:
            # Shutting down must not fail for it: the lease expires by itself.
            log.warning("Could not drop this process's lease (%s); it expires in %g s", type(exc).__name__,
                        self.lease_ttl)
        self._leased = False

    async def wait_idle(self) -> None:
        """Until every task this process started has finished (tests, benchmarks)."""
        while self._tasks or self._notifications:
            await asyncio.gather(*self._tasks, *self._notifications, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        if self._closing:
            coro.close()  # shutting down: the job stays in the database and is recovered
            return
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def closing(self) -> bool:
        """True once close() began: PixVerse's messages are no longer acted on here."""
        return self._closing

    def follows(self, guild_id: str) -> bool:
        """True when this process follows the server's jobs (its shard is here)."""
        return self._shards is None or shard_of(guild_id, self._shards[0]) in self._shards[1]

    def _owner_for(self, guild_id: str) -> str | None:
        """Who runs a job of this server placed now: this process, or (another shard's server)
        nobody yet, until the process of its shard takes it (``_take_unowned``)."""
        return self.owner if self.follows(guild_id) else None

    async def _hold_lease(self) -> None:
        """A job's owner is a process with a lease (the store's rule): taken before the first job
        this dispatcher owns, renewed by the lease task once started."""
        if not self._leased:
            await self._renew_lease()

    def _refuse_when_closing(self) -> None:
        if self._closing:
            raise ApiError(503, "The bot is shutting down; please try again in a moment")

    # --- what members ask -----------------------------------------------------------

    async def submit(
        self, *, guild_id: str, requester_id: str, request_channel_id: str, verb: Verb, body: dict[str, Any],
        extra: dict[str, Any] | None = None, named_account: bool = False,
    ) -> Placement:
        """``extra``: stored with the parameters but not sent to PixVerse (replyUrl/replyRef).
        ``named_account``: the body may name its account as useapi's clients do (:meth:`chosen_account`);
        the job then goes on that account only, not the random choice among free ones, refused (429,
        409) rather than queued when it cannot take it."""
        self._refuse_when_closing()
        validated = CATALOGUE[verb].validate(body)
        # An image's bytes are stored beside the job until it ends; its parameters keep a summary.
        images = {name: value for name, value in validated.items() if isinstance(value, Image)}
        params = {**{name: value.summary() if isinstance(value, Image) else value for name, value in validated.items()},
                  **(extra or {})}
        new = NewJob(guild_id, requester_id, request_channel_id, verb, params, images=images)
        account_channel_id = await self.chosen_account(guild_id, body) if named_account else None
        await self._hold_lease()
        if account_channel_id is not None:
            try:
                job = await self.jobs.place_on(new, account_channel_id=account_channel_id, now=self.clock(),
                                               owner=self._owner_for(guild_id))
            except ApiError as exc:
                await self._estimate_retry(exc, guild_id, account_channel_id=account_channel_id)
                raise
            self._created(Placement(job, None))
            self._run_all([job])
            return Placement(job, None)
        try:
            result = await self.jobs.place(
                new, now=self.clock(), owner=self._owner_for(guild_id), queue_size=self.queue_size, rng=self.rng,
            )
        except ApiError as exc:
            await self._estimate_retry(exc, guild_id)
            raise
        self._created(result)
        if result.queue_position is None:
            self._run_all([result.job])
        return result

    def _created(self, placement: Placement) -> None:
        job, position = placement.job, placement.queue_position
        self.events.emit(JOB_CREATED, **job_fields(job), queued=position is not None)
        if position is not None:
            self.events.emit(JOB_QUEUED, job=job.job_id, server=job.guild_id, verb=job.verb.value, position=position)

    async def chosen_account(self, guild_id: str, body: dict[str, Any]) -> str | None:
        """The account a job request names with useapi's optional ``channel`` (and ``server``) or
        ``discord`` fields, checked against the server's configurations; None when it names none
        (``maxJobs`` alone, as v1 clients send it on every request, chooses nothing)."""
        server, channel, token = (_given(body, name) for name in ("server", "channel", "discord"))
        if channel is None and token is None:
            return None
        if server is not None and server != guild_id:
            raise ApiError(400, f"Param server ({echo(server)}) not matching to this Discord server ({guild_id})")
        by_token = None if token is None else await self.accounts.find_by_token(token)
        if by_token is not None and by_token.guild_id != guild_id:
            by_token = None
        if channel is not None:
            if not is_snowflake(channel):
                raise ApiError(400, f"Param channel ({echo(channel)}) is not valid Discord channel id")
            config = await self.accounts.get(guild_id, channel)
            if config is None:
                raise ApiError(404, CONFIGURATION_NOT_FOUND)
            if token is not None and (by_token is None or by_token.channel_id != channel):
                raise ApiError(400, f"Param discord is not the token of the PixVerse account of channel {channel}")
        else:
            if by_token is None:
                raise ApiError(400, "Param discord is not the token of a PixVerse account configured in this server")
            config = by_token
        max_jobs = body.get("maxJobs")
        if max_jobs is not None and not isinstance(max_jobs, bool) and str(max_jobs).strip():
            try:
                same = float(str(max_jobs).strip()) == config.max_jobs
            except ValueError:
                same = False
            if not same:
                raise ApiError(400, f"Param maxJobs ({echo(max_jobs)}) does not match the configuration of channel"
                                    f" {config.channel_id} (maxJobs {config.max_jobs})")
        return config.channel_id

    async def press(
        self, *, guild_id: str, requester_id: str, request_channel_id: str, job_id: Any, button: Any,
        extra: dict[str, Any] | None = None, prompt: Any = None, account_token: Any = None, is_manager: bool = False,
    ) -> Job:
        """``prompt`` and ``account_token`` are what v1 clients send with every press: a prompt
        cannot reach PixVerse (it asks for it in a window only the presser's own client sees), and
        a token, when given, must be the one of the account that made the job."""
        self._refuse_when_closing()
        job_id = validate_job_id(job_id)
        button = validate_button(button)
        if _given({"prompt": prompt}, "prompt") is not None:
            raise ApiError(400, "Param prompt cannot be sent with a button: PixVerse asks for it in a window that"
                                " only the pressing member's own Discord app receives")
        parent = await self.get(job_id, guild_id)
        account_token = _given({"discord": account_token}, "discord")
        if account_token is not None:
            owner = await self.accounts.find_by_token(account_token)
            if owner is None or owner.guild_id != guild_id or owner.channel_id != parent.account_channel_id:
                raise ApiError(400, f"Param discord is not the token of the PixVerse account that made job {job_id}")
        if parent.requester_id != requester_id and not is_manager and (
            self.servers is None or (await self.servers.get(guild_id)).buttons != "everyone"
        ):
            raise ApiError(403, f"Only the member who asked for job {job_id} or a server manager can press its buttons"
                                " (a manager can open them to everyone with /pixverse-settings buttons:everyone)")
        if parent.status is not JobStatus.COMPLETED:
            raise ApiError(400, f"Job {job_id} is {parent.status.value}; only a completed job's buttons can be pressed")
        labels = [b["label"] for b in parent.buttons]
        if button not in labels:
            raise ApiError(400, f"Required param button ({button}) is not one of {', '.join(labels) or 'this job’s buttons'}")
        # The parent's message id lets PixVerse's replies (message_reference) find this job.
        params = {"button": button, "parent_message_id": parent.message_id, **(extra or {})}
        await self._hold_lease()
        try:
            job = await self.jobs.place_on(
                NewJob(guild_id, requester_id, request_channel_id, Verb.BUTTON, params, parent_job_id=job_id),
                account_channel_id=parent.account_channel_id, now=self.clock(), owner=self._owner_for(guild_id),
            )
        except ApiError as exc:
            await self._estimate_retry(exc, guild_id, account_channel_id=parent.account_channel_id)
            raise
        self._created(Placement(job, None))
        self._run_all([job])
        return job

    async def get(self, job_id: Any, guild_id: str) -> Job:
        job_id = validate_job_id(job_id)
        job = await self.jobs.get(job_id, guild_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def public_job_by_id(self, job_id: Any, guild_id: str, *, with_reply: bool = False) -> dict[str, Any]:
        """What :meth:`get` then :meth:`public_job` give, in one lookup (the polled path)."""
        job_id = validate_job_id(job_id)
        found = await self.jobs.get_with_token_last4(job_id, guild_id)
        if found is None:
            raise job_not_found(job_id)
        job, last4 = found
        return job.to_public(masked_token=None if last4 is None else mask_token(last4), with_reply=with_reply)

    async def public_job(self, job: Job, *, with_reply: bool = False) -> dict[str, Any]:
        """The useapi job fields, with the account's token masked (never more)."""
        masked = None
        if job.account_channel_id:
            try:
                account = await self.accounts.get(job.guild_id, job.account_channel_id)
            except StoreError as exc:  # unreachable, or busy (a lock or statement timeout)
                # The job is committed: a 503 ("try again") would have its caller place it twice.
                log.warning("Answering job %s without its account's masked token: %s", job.job_id, exc)
                account = None
            masked = account.masked_token if account else None
        return job.to_public(masked_token=masked, with_reply=with_reply)

    async def executing(self, guild_id: str) -> list[Job]:
        return await self.jobs.executing(guild_id)

    async def queue_position(self, job: Job) -> int | None:
        return await self.jobs.queue_position(job)

    async def waiting(self, guild_id: str) -> list[Job]:
        """The server's queue, first in line first."""
        return await self.jobs.waiting(guild_id)

    async def ended_since(self, guild_id: str, *, seconds: float) -> EndedJobs:
        """The server's jobs ended within the last ``seconds``: counts by final state, run times."""
        return await self.jobs.ended_since(guild_id, since=self.clock() - seconds)

    async def of_member(self, guild_id: str, requester_id: str, *, limit: int = 10) -> list[Job]:
        """A member's last jobs in a server, newest first, ended ones included."""
        return await self.jobs.of_member(guild_id, requester_id, limit=limit)

    async def keep_status_message(self, job_id: str, message_id: str, *, in_channel: bool) -> None:
        """The message that shows the job to its member: the reply to their command, or (in_channel)
        one posted in the channel, which a restart edits again."""
        await self.jobs.set_status_message(job_id, message_id, in_channel=in_channel)

    async def final_shown(self, job_id: str) -> None:
        """The member's message shows the job's end, or its replyUrl took it (or neither ever can): not
        told again."""
        await self.jobs.mark_final_shown(job_id)

    async def show_ends(self) -> None:
        """Tells the listeners again of the ended jobs of followed servers whose end is not recorded as
        shown (JobStore.mark_final_shown), as if they had just ended: each member's message gets its end,
        each replyUrl its final state."""
        if self._closing or not self.listeners:
            return
        now = self.clock()
        ours: list[Job] = []
        # Members' ends and replyUrl ends each have their own batch: a receiver down all day, with
        # its hundreds of jobs, cannot take the members' turn.
        for through_api in (False, True):
            ours += await self.jobs.final_not_shown(ended_before=now - self.show_grace,
                                                    ended_after=now - SHOW_ENDS_WITHIN_SECONDS,
                                                    limit=SHOW_ENDS_BATCH, shards=self._shards,
                                                    through_api=through_api)
        if self._closing:
            return
        retold = frozenset(job.job_id for job in ours)
        if retold:
            # Said when ends join the list, not every minute for a day while a receiver or a channel
            # stays unreachable.
            (log.info if retold - self._retold else log.debug)("Telling again the end of %d job(s) not told yet",
                                                               len(retold))
        self._retold = retold
        for job in ours:
            self._notify(job)

    async def cancel(self, job_id: Any, *, guild_id: str, user_id: str, is_manager: bool) -> Job:
        job = await self.get(job_id, guild_id)
        if job.requester_id != user_id and not is_manager:
            raise ApiError(403, f"Only the member who asked for job {job.job_id} or a server manager can cancel it")
        # PixVerse may still post for it: those messages stay attributed to it (pixverse_open).
        by = "the HTTP API" if user_id == API_REQUESTER else f"<@{user_id}>"
        ended = await self.finish(job.job_id, JobStatus.CANCELLED, error=f"Cancelled by {by}")
        if ended is None:
            job = await self.get(job.job_id, guild_id)
            raise ApiError(409, f"Job {job.job_id} is already {job.status.value}")
        return ended

    # --- running --------------------------------------------------------------------

    async def _run(self, job: Job, *, delay: float = 0.0, marking_at: float | None = None) -> None:
        """Hands a placed job to PixVerse. Every way out ends the job, leaves it submitted, or (the
        database not answering) tries again later. ``marking_at``: the time an earlier try wrote
        when marking the job sent, whose answer never came (its commit may have landed)."""
        if delay:
            await asyncio.sleep(delay)
        marked = False
        try:
            token = await self.accounts.decrypt_token(job.guild_id, job.account_channel_id)
            if token is None:
                await self.finish(job.job_id, JobStatus.FAILED, error="The PixVerse account was deleted before the job ran")
                return
            register_secrets(token)
            parent = None
            if job.verb is Verb.BUTTON:  # read before marking: a failure here is tried again
                parent = await self.jobs.get(job.parent_job_id)
            if marking_at is not None and await self._marked_by_us(job, marking_at):
                submitted_at = marking_at  # the earlier try's mark landed; nothing was sent
            else:
                submitted_at = marking_at = self.clock()
                if not await self.jobs.mark_submitted(job, submitted_at, owner=self.owner):
                    return  # cancelled, moved or taken over meanwhile: it must not reach PixVerse
            marked = True
            if job.verb is Verb.BUTTON:
                if parent is None:
                    raise SubmitError(f"Job {job.parent_job_id} no longer exists", account_fault=False)
                await self.backend.press(job, parent, token)
            else:
                await self.backend.submit(job, token)
            # attempt: a job moved to another account (or retried after an overload) is sent again.
            self.events.emit(JOB_STARTED, **job_fields(job), wait_s=max(0.0, submitted_at - job.created_at),
                             attempt=job.placement_attempts + 1)
        except SubmitError as exc:
            # It never reached PixVerse: no message of PixVerse's may be attributed to it.
            await self.jobs.close_at_pixverse(job.job_id)
            if exc.account_rejected:
                await self._reject_account(job, exc.reason, exc.details)
                return
            if exc.account_fault:
                await self._account_failed(job)
            await self.finish(job.job_id, JobStatus.FAILED, error=exc.reason, error_details=exc.details)
        except asyncio.CancelledError:
            raise  # shutting down: the job stays executing and is recovered later
        except StoreError as exc:
            if marked:  # marked as sent: only its end is left to write
                log.warning("Job %s could not be sent: the database did not answer (%s)", job.job_id, exc)
                await self.finish(job.job_id, JobStatus.FAILED, error="The bot could not submit the job to PixVerse")
                return
            # Ending it would need the database too: the job keeps its slot and is sent once the
            # database answers.
            delay = min(RUN_RETRY_MAX_SECONDS, max(RUN_RETRY_FIRST_SECONDS, 2 * delay))
            log.warning("Job %s waits for the database (%s); tried again in %g s", job.job_id, exc, delay)
            self._spawn(self._run(job, delay=delay, marking_at=marking_at), f"run {job.job_id}")
        except Exception:
            log.exception("Submitting job %s failed unexpectedly", job.job_id)
            await self.finish(job.job_id, JobStatus.FAILED, error="The bot could not submit the job to PixVerse")

    async def _marked_by_us(self, job: Job, marking_at: float) -> bool:
        """Whether the job is marked sent by this process at ``marking_at``: an earlier try's mark
        that committed though its answer was lost (nothing was sent after it)."""
        current = await self.jobs.get(job.job_id)
        return (current is not None and current.state is JobState.SUBMITTED and current.owner == self.owner
                and current.version == job.version and current.submitted_at == marking_at)

    async def job_update(self, job_id: str, update: JobUpdate) -> None:
        """What the backend saw PixVerse say about a job."""
        if self._closing:
            return  # not acted on now: the restart replays it from the channel's history
        job = await self.jobs.get(job_id)
        if job is None:
            return
        if update.account_rejected:
            await self._reject_account(job, update.account_rejected, update.error_details)
            return
        if update.overloaded:
            await self._retry_overloaded(job, update)
            return
        if update.status in (JobStatus.STARTED, JobStatus.PROGRESS):
            started = await self.jobs.record_progress(
                job_id, update.status, now=self.clock(), message_id=update.message_id, progress=update.progress,
                content=update.content,
            )
            if started is not None:
                self._notify(started)
            elif update.status is JobStatus.PROGRESS and job.state is JobState.SUBMITTED and self._progress_due(job_id):
                # The job as this update left it, without reading it again.
                self._notify(replace(job, status=JobStatus.PROGRESS, progress=update.progress or job.progress,
                                     content=update.content or job.content,
                                     message_id=update.message_id or job.message_id, updated_at=self.clock()),
                             progress=True)
            return
        if update.status in FINAL:
            ended = await self.finish(job_id, update.status, fields=result_fields(update))
            if ended is None:
                # Already ended (cancelled, timed out): PixVerse's late answer changes nothing.
                await self.jobs.close_at_pixverse(job_id)
            elif update.status is JobStatus.COMPLETED:
                await self.accounts.record_success(job.account_channel_id)
            elif update.status is JobStatus.FAILED:
                await self._account_failed(job)

    def progress_recorded(self, job: Job) -> None:
        """The backend wrote PixVerse's progress of a started job itself (one statement, the
        common case of job_update): the job as written is told as job_update tells it."""
        if not self._closing and job.status is JobStatus.PROGRESS and job.state is JobState.SUBMITTED \
                and self._progress_due(job.job_id):
            self._notify(job, progress=True)

    async def finish(
        self, job_id: str, status: JobStatus, *, error: str | None = None, error_details: str | None = None,
        fields: dict[str, Any] | None = None, expected: Job | None = None,
    ) -> Job | None:
        """Ends a job and frees its slot; returns it as ended, or None when it had already
        ended (or, with ``expected``, moved since that read)."""
        values = dict(fields or {})
        if error is not None:
            # The details go with their error: a move's note left by requeue (naming the account
            # Discord refused) is not what this end's error is about.
            values["error"] = error
            values["error_details"] = error_details
        elif error_details is not None:
            values["error_details"] = error_details
        released = await self.jobs.release(job_id, status, now=self.clock(), fields=values, expected=expected)
        if released.job is None:
            return None
        self._ended(released.job)
        if status is JobStatus.COMPLETED and released.job.submitted_at is not None:
            self._run_times.append(released.job.updated_at - released.job.submitted_at)
        self._notify(released.job)
        if released.others_waiting:
            # The oldest waiting jobs take the freed slot, in a transaction of their own.
            try:
                await self.account_available(released.job.guild_id)
            except Exception:
                # The release is committed and reported (the member hears the job ended, once);
                # the waiting jobs get the slot at the next sweep's promotion (or, shutting down
                # under it, the next start's).
                if self._closing:
                    log.debug("Promoting the waiting jobs of server %s is left for the next start",
                              released.job.guild_id, exc_info=True)
                else:
                    log.warning("Promoting the waiting jobs of server %s failed; the next sweep will",
                                released.job.guild_id, exc_info=True)
        return released.job

    def _ended(self, job: Job) -> None:
        """The job's final event, from the one call that ended it."""
        if job.status is JobStatus.COMPLETED:
            self.events.emit(JOB_COMPLETED, **job_fields(job, ended_at=job.updated_at))
            return
        if job.status is JobStatus.FAILED and job.error == TIMED_OUT:
            name, reason = JOB_TIMED_OUT, job.error_details or job.error
        else:
            name = {JobStatus.MODERATED: JOB_MODERATED, JobStatus.CANCELLED: JOB_CANCELLED}.get(job.status, JOB_FAILED)
            reason = job.error or job.error_details
        self.events.emit(name, **job_fields(job, ended_at=job.updated_at), reason=reason)

    async def _estimate_retry(self, exc: ApiError, guild_id: str, *, account_channel_id: str | None = None) -> None:
        """On a 429, the seconds until a slot is likely free (the Retry-After header): the typical
        run time of a job, less the age of the oldest running one, at least 1."""
        if exc.code != 429:
            return
        self.events.placement_refused()
        try:
            running = await (self.jobs.holding_slots(account_channel_id) if account_channel_id
                             else self.jobs.executing(guild_id))
        except Exception:
            running = []
        now = self.clock()
        ages = [now - (job.submitted_at or job.updated_at) for job in running if job.slot_held]
        typical = statistics.median(self._run_times) if self._run_times else TYPICAL_RUN_SECONDS
        soonest = min((typical - age for age in ages), default=typical)
        if soonest < RETRY_AFTER_OVERDUE_SECONDS:
            # The oldest job runs longer than usual: no sooner than this (not a retry every second).
            soonest = RETRY_AFTER_OVERDUE_SECONDS
        exc.retry_after = max(1, math.ceil(min(soonest, self.job_timeout, 3600.0)))

    def _run_all(self, jobs: list[Job]) -> None:
        """Runs the placed jobs this process owns; the others are for their shard's process."""
        for job in jobs:
            if job.owner == self.owner:
                self._spawn(self._run(job), f"run {job.job_id}")

    def _notify(self, job: Job, *, progress: bool = False) -> None:
        """Tells the listeners in the background: a command that ended a job (cancel, an
        account deleted) answers at once, however slow telling the members is. A member's job of
        a server another process follows is told to that process instead (it holds the member's
        message), through ``tell_elsewhere``."""
        if job.status in FINAL:
            self._progress_told.pop(job.job_id, None)
        if (self.tell_elsewhere is not None and job.request_channel_id != API_REQUESTER
                and not self.follows(job.guild_id)):
            task = asyncio.create_task(self._tell_elsewhere(job), name=f"tell {job.job_id} elsewhere")
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)
            return
        for listener in self.listeners:
            tell = getattr(listener, "job_progressed", None) if progress else listener.job_changed
            if tell is None:
                continue
            task = asyncio.create_task(self._tell(listener, tell, job), name=f"notify {job.job_id}")
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

    async def _tell_elsewhere(self, job: Job) -> None:
        try:
            await self.tell_elsewhere(job)
        except Exception:
            log.warning("Could not tell the process of server %s about job %s", job.guild_id, job.job_id,
                        exc_info=True)

    def told(self, job_id: str | None) -> None:
        """Another process changed a job of a server this one follows (``JOB_TOLD_TOPIC``): read
        it and tell the listeners here, as if it had changed here."""
        if job_id is None or self._closing:
            return  # announcements missed: nothing to replay (the members' messages show the last told)
        self._spawn(self._told(job_id), f"told {job_id}")

    async def _told(self, job_id: str) -> None:
        job = await self.jobs.get(job_id)
        if job is not None and self.follows(job.guild_id):
            self._notify(job)

    def _progress_due(self, job_id: str) -> bool:
        """At most one progress notice per job every PROGRESS_EVERY_SECONDS (bounded memory)."""
        now = self.clock()
        if now - self._progress_told.get(job_id, float("-inf")) < PROGRESS_EVERY_SECONDS:
            return False
        if len(self._progress_told) >= PROGRESS_TRACKED and job_id not in self._progress_told:
            self._progress_told.pop(next(iter(self._progress_told)))
        self._progress_told[job_id] = now
        return True

    @staticmethod
    async def _tell(listener: JobListener, tell: Callable[[Job], Awaitable[None]], job: Job) -> None:
        try:
            await tell(job)
        except Exception:
            log.exception("Telling %s about job %s failed", type(listener).__name__, job.job_id)

    # --- accounts -------------------------------------------------------------------

    async def _reject_account(self, job: Job, reason: str, details: str | None) -> None:
        """Discord or PixVerse refused the account: it leaves rotation, its jobs end, and
        the job that met the refusal is placed once more on another account if one is free."""
        await self._leave_rotation(job.guild_id, job.account_channel_id, reason, details)
        if job.verb is not Verb.BUTTON and job.placement_attempts == 0:
            moved, promoted = await self.jobs.requeue(job, now=self.clock(), owner=self._owner_for(job.guild_id),
                                                      rng=self.rng,
                error=f"Moved from channel {job.account_channel_id}: {reason}",
            )
            self._run_all(([moved] if moved else []) + promoted)
        await self.account_removed(
            job.guild_id, job.account_channel_id, reason=f"The PixVerse account left rotation: {reason}"
        )

    async def account_removed(self, guild_id: str, channel_id: str, *, reason: str) -> None:
        """An account was deleted or left rotation: its jobs end now and free their slots."""
        for job in await self.jobs.holding_slots(channel_id):
            if job.guild_id == guild_id:
                await self.finish(job.job_id, JobStatus.FAILED, error=reason, expected=job)
        if await self.accounts.in_rotation_count(guild_id) == 0:
            # Nothing can ever take the waiting jobs: tell their members now, not at the timeout.
            for job in await self.jobs.waiting(guild_id):
                await self.finish(
                    job.job_id, JobStatus.FAILED, error="No PixVerse account of this server is in rotation", expected=job
                )

    async def account_available(self, guild_id: str) -> None:
        """A slot was freed, or an account added or put back: waiting jobs may take the slots,
        run by this process if it follows the server, else by the process of its shard."""
        owner = self._owner_for(guild_id)
        if owner is not None:
            await self._hold_lease()
        self._run_all(await self.jobs.promote_waiting(guild_id, now=self.clock(), owner=owner, rng=self.rng))

    async def _account_failed(self, job: Job) -> None:
        failures = await self.accounts.record_failure(job.account_channel_id)
        if failures >= MAX_CONSECUTIVE_FAILURES:
            await self._leave_rotation(job.guild_id, job.account_channel_id, f"{failures} jobs in a row failed",
                                       "Put it back with /pixverse-account-reset")

    async def _leave_rotation(self, guild_id: str, channel_id: str, reason: str, details: str | None) -> None:
        """Takes the account out of rotation with the reason; account.out_of_rotation from the one
        call that took it out (the store's conditional update decides, whatever the processes): not
        again, and the first reason kept, for an account already out."""
        if await self.accounts.set_rotation(guild_id, channel_id, in_rotation=False, error=reason,
                                            error_details=details):
            self.events.emit(ACCOUNT_OUT_OF_ROTATION, server=guild_id, channel=channel_id, reason=reason)

    async def _retry_overloaded(self, job: Job, update: JobUpdate) -> None:
        if job.placement_attempts >= OVERLOAD_RETRIES or job.verb is Verb.BUTTON:
            await self.finish(
                job.job_id, JobStatus.FAILED, error="PixVerse is overloaded; try again later",
                error_details=update.error_details,
            )
            return
        # The refusal may arrive twice (create + edit, a replay): only the first retries, and
        # only while the job is where this read saw it (not already moved and sent again).
        if await self.jobs.close_at_pixverse(job.job_id, version=job.version):
            self._spawn(self._retry_later(job, update), f"retry {job.job_id}")

    async def _retry_later(self, job: Job, update: JobUpdate) -> None:
        await asyncio.sleep(self.overload_retry_delay)
        moved, promoted = await self.jobs.requeue(job, now=self.clock(), owner=self._owner_for(job.guild_id),
                                                  rng=self.rng,
            error=update.error_details or "PixVerse refused the job for load", allow_same=True,
        )
        self._run_all(([moved] if moved else []) + promoted)

    # --- sweep and recovery ---------------------------------------------------------

    async def _every(self, interval: float, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Dispatcher %s failed", work.__name__)

    async def _renew_lease(self) -> None:
        if self.clock_sync is not None:
            await self.clock_sync()
        await self.jobs.heartbeat(self.owner, self.clock(), follows=claim(self._shards))
        self._leased = True

    async def sweep(self) -> None:
        self._sweeping_since = self.monotonic()
        try:
            await self._sweep()
        finally:
            self._sweeping_since = None

    async def _sweep(self) -> None:
        # Renewed first: a process that was paused past its lease (a suspended machine) must
        # not find its own lease forgotten by this sweep while it still owns jobs.
        await self._renew_lease()
        now = self.clock()
        for job in await self.jobs.timed_out(now=now, timeout=self.job_timeout):
            what = "No PixVerse account was free" if job.queued else "PixVerse did not finish the job"
            await self.finish(
                job.job_id, JobStatus.FAILED, error=TIMED_OUT,
                error_details=f"{what} within {self.job_timeout:g} seconds", expected=job,
            )
        await self.recover()
        # An ended job whose PixVerse answer never came stops competing for messages.
        await self.jobs.close_stale_at_pixverse(before=now - self.job_timeout)
        await self.jobs.purge(before=now - RETENTION_SECONDS)
        await self._tell_clashes(now)

    async def _tell_clashes(self, now: float) -> None:
        """Warns of each live process that follows servers this one follows too (the same shard, no
        SHARD_IDS, another SHARD_COUNT): once, and again if what it follows changes."""
        follows = await self.jobs.live_follows(now=now, ttl=self.lease_ttl)
        live = set(follows)
        clashes: dict[str, str] = {}
        for owner, written in follows.items():
            if owner == self.owner or written is None or not self._owner_is_alive(owner, live):
                continue
            try:
                problem = clash(self._shards, read_claim(written))
            except ValueError:
                continue
            if problem is not None:
                clashes[owner] = problem
                if self._clashes.get(owner) != problem:
                    log.warning("Process %s %s", owner, problem)
        for owner in self._clashes.keys() - clashes.keys():
            log.info("Process %s no longer follows servers of this process (%s)", owner, describe(self._shards))
        self._clashes = clashes

    def stalled(self) -> str | None:
        """Why the sweep (timeouts, recovery, promotion) is not doing its work, or None: one has been
        under way for STALLED_AFTER_SWEEPS of its intervals (at least STALLED_AFTER_SECONDS), as when
        a statement waits for ever on a lock or a connection cut without a word. A sweep that fails
        fast (the database away) is not stalled: the health check's own database checks say why."""
        if self._sweeping_since is None or self._closing:
            return None
        age = self.monotonic() - self._sweeping_since
        if age <= max(STALLED_AFTER_SECONDS, STALLED_AFTER_SWEEPS * self.sweep_interval):
            return None
        return f"the dispatcher's sweep has been under way for {age:.0f} s"

    def _owner_is_alive(self, owner: str | None, live: set[str]) -> bool:
        if owner == self.owner:
            return True
        if owner is None or owner not in live:
            return False  # no fresh lease
        host, namespace, pid, _ = (owner.split(":") + ["", "", "", ""])[:4]
        if host != socket.gethostname() or namespace != _pid_namespace() or not pid.isdigit():
            return True  # elsewhere: the lease is all we can know
        # Same host and pid namespace: a pid that is gone, or that is our own (a container
        # restarted with the same pid), is a dead predecessor even while its lease is fresh.
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def pickup(self, guild_id: str | None = None) -> None:
        """Told that a job of ``guild_id`` was placed with no owner (None: perhaps several, of any
        server): takes those of the servers this process follows, soon, once however often told."""
        if not self._started or self._closing or (guild_id is not None and not self.follows(guild_id)):
            return  # before start(): the gateway has not delivered the servers; recovery takes them then
        if self._pickup_task is not None and not self._pickup_task.done():
            self._pickup_again = True
            return
        self._pickup_task = asyncio.create_task(self._pickup(), name="dispatcher pickup")
        self._tasks.add(self._pickup_task)
        self._pickup_task.add_done_callback(self._tasks.discard)

    async def _pickup(self) -> None:
        while True:
            self._pickup_again = False
            try:
                await self._take_unowned()
            except Exception:
                log.exception("Taking the jobs placed for this process failed; the next poll tries again")
            if not self._pickup_again:
                return

    async def _take_unowned(self) -> None:
        """Claims the placed jobs of followed servers that no process runs yet, and runs them.
        (Jobs already sent to PixVerse with no owner are recovery's: they resume from history.)"""
        for job in await self.jobs.unowned(UNOWNED_BATCH, shards=self._shards):
            if not self.follows(job.guild_id):
                continue
            await self._hold_lease()
            if await self.jobs.claim(job, self.owner):
                self._run_all([replace(job, owner=self.owner)])

    async def recover(self) -> None:
        """Takes over the jobs of processes that died: resumes them, or fails those past
        their timeout; gives waiting jobs the slots that are free."""
        now = self.clock()
        live = set(await self.jobs.live_owners(now=now, ttl=self.lease_ttl))
        alive = [owner for owner in live | {self.owner} if self._owner_is_alive(owner, live)]
        to_resume: dict[tuple[str, str], list[Job]] = {}
        for job in await self.jobs.orphaned(alive):
            if not self.follows(job.guild_id):
                continue  # its shard's process takes it; the sweep's timeout ends it if none does
            if not await self.jobs.claim(job, self.owner):
                continue
            claimed = replace(job, owner=self.owner)
            if (job.submitted_at or job.updated_at) + self.job_timeout < now:
                await self.finish(
                    job.job_id, JobStatus.FAILED, error=TIMED_OUT,
                    error_details="The bot stopped while the job ran and it was past its timeout when the bot came back",
                    expected=claimed,
                )
            elif job.submitted_at is None:
                self._spawn(self._run(claimed), f"run {job.job_id}")
            else:
                to_resume.setdefault((job.guild_id, job.account_channel_id), []).append(claimed)
        for (guild_id, channel_id), jobs in to_resume.items():
            token = await self.accounts.decrypt_token(guild_id, channel_id)
            if token is None:
                for job in jobs:
                    await self.finish(job.job_id, JobStatus.FAILED, error="The PixVerse account was deleted", expected=job)
                continue
            register_secrets(token)
            log.info("Resuming %d job(s) of a stopped process on channel %s", len(jobs), channel_id)
            try:
                await self.backend.resume(jobs, token)
            except Exception:
                log.exception("Resuming jobs on channel %s failed; the sweep will time them out", channel_id)
        for guild_id in await self.jobs.guilds_with_waiting_jobs():
            await self.account_available(guild_id)
        await self.jobs.forget_dead_owners(now=now, ttl=self.lease_ttl)
