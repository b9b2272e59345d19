"""The dispatcher: places jobs, hands them to PixVerse, and ends each one exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from bot.accounts.repository import AccountRepository
from bot.db import Database
from bot.dispatch import placement
from bot.dispatch.backends.base import JobUpdate, PixverseBackend, SubmitError
from bot.dispatch.jobs import JobRepository, result_fields
from bot.dispatch.models import FINAL, Job, JobStatus, Verb
from bot.dispatch.placement import NewJob, Placement
from bot.dispatch.validation import validate_button, validate_create, validate_job_id
from bot.errors import ApiError
from bot.logging import register_secrets

log = logging.getLogger(__name__)

RETENTION_SECONDS = 31 * 24 * 3600
OVERLOAD_RETRIES = 2
MAX_CONSECUTIVE_FAILURES = 3


class JobListener(Protocol):
    """Told when a member should hear about their job (started, and the final state)."""

    async def job_changed(self, job: Job) -> None: ...


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, f"Job {job_id} not found")


def process_owner() -> str:
    """host:pid:random — the pid lets a restart on the same host see its predecessor is gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    def __init__(
        self,
        db: Database,
        accounts: AccountRepository,
        backend: PixverseBackend,
        *,
        queue_size: int = 0,
        job_timeout: float = 900.0,
        overload_retry_delay: float = 10.0,
        owner: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        listeners: list[JobListener] | None = None,
    ) -> None:
        self._db = db
        self.accounts = accounts
        self.jobs = JobRepository(db)
        self.backend = backend
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.overload_retry_delay = overload_retry_delay
        # The sweep runs at least every min(30 s, timeout/4), so a job ends at most a
        # quarter of its timeout late; a process that missed three sweeps is dead.
        self.sweep_interval = min(30.0, job_timeout / 4)
        self.lease_ttl = 3 * self.sweep_interval
        self.owner = owner or process_owner()
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        self.listeners: list[JobListener] = list(listeners or [])
        self._tasks: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None
        backend.bind(self)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self.jobs.heartbeat(self.owner, self.clock())
        await self.recover()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="dispatcher sweep")

    def start_soon(self) -> None:
        """start() as a task that close() cancels, for callers that must not wait (on_ready)."""
        self._spawn(self.start(), "dispatcher start")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sweeper is not None:  # start() may have created it while being cancelled
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.backend.close()
        # Jobs still executing stay in the database; dropping the lease lets the next
        # start (or another process) take them over at once instead of after the TTL.
        await self.jobs.forget_owner(self.owner)

    async def wait_idle(self) -> None:
        """Until every submission this process started has been handed over (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- what members ask -----------------------------------------------------------

    async def submit(
        self, *, guild_id: str, requester_id: str, request_channel_id: str, verb: Verb, body: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> Placement:
        """``extra``: stored with the parameters but not sent to PixVerse (replyUrl/replyRef)."""
        params = {**validate_create(body, verb), **(extra or {})}
        result = await placement.place(
            self._db,
            NewJob(guild_id, requester_id, request_channel_id, verb, params),
            now=self.clock(),
            owner=self.owner,
            queue_size=self.queue_size,
            rng=self.rng,
        )
        if result.queue_position is None:
            self._spawn(self._run(result.job), f"run {result.job.job_id}")
        return result

    async def press(
        self, *, guild_id: str, requester_id: str, request_channel_id: str, job_id: Any, button: Any,
        extra: dict[str, Any] | None = None,
    ) -> Job:
        job_id = validate_job_id(job_id)
        button = validate_button(button)
        parent = await self.get(job_id, guild_id)
        if parent.status is not JobStatus.COMPLETED:
            raise ApiError(400, f"Job {job_id} is {parent.status.value}; only a completed job's buttons can be pressed")
        labels = [b["label"] for b in parent.buttons]
        if button not in labels:
            raise ApiError(400, f"Required param button ({button}) is not one of {', '.join(labels) or 'this job’s buttons'}")
        # The parent's message id lets PixVerse's replies (message_reference) find this job.
        params = {"button": button, "parent_message_id": parent.message_id, **(extra or {})}
        job = await placement.place_on(
            self._db,
            NewJob(guild_id, requester_id, request_channel_id, Verb.BUTTON, params, parent_job_id=job_id),
            account_channel_id=parent.account_channel_id,
            now=self.clock(),
            owner=self.owner,
        )
        self._spawn(self._run(job), f"run {job.job_id}")
        return job

    async def get(self, job_id: Any, guild_id: str) -> Job:
        job_id = validate_job_id(job_id)
        job = await self.jobs.get(job_id, guild_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def executing(self, guild_id: str) -> list[Job]:
        return await self.jobs.executing(guild_id)

    async def queue_position(self, job: Job) -> int | None:
        return await placement.queue_position(self._db, job)

    async def cancel(self, job_id: Any, *, guild_id: str, user_id: str, is_manager: bool) -> Job:
        job = await self.get(job_id, guild_id)
        if job.requester_id != user_id and not is_manager:
            raise ApiError(403, f"Only the member who asked for job {job.job_id} or a server manager can cancel it")
        if job.status in FINAL:
            raise ApiError(409, f"Job {job.job_id} is already {job.status.value}")
        # PixVerse may still post for it: those messages stay attributed to it (pixverse_open).
        ended = await self.finish(job.job_id, JobStatus.CANCELLED, error=f"Cancelled by <@{user_id}>")
        if not ended:
            job = await self.get(job.job_id, guild_id)
            raise ApiError(409, f"Job {job.job_id} is already {job.status.value}")
        return await self.get(job.job_id, guild_id)

    # --- running --------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        token = await self.accounts.decrypt_token(job.guild_id, job.account_channel_id)
        if token is None:
            await self.finish(job.job_id, JobStatus.FAILED, error="The PixVerse account was deleted before the job ran")
            return
        register_secrets(token)
        await self.jobs.mark_submitted(job.job_id, self.clock())
        try:
            if job.verb is Verb.BUTTON:
                parent = await self.jobs.get(job.parent_job_id)
                if parent is None:
                    raise SubmitError(f"Job {job.parent_job_id} no longer exists")
                await self.backend.press(job, parent, token)
            else:
                await self.backend.submit(job, token)
        except SubmitError as exc:
            # It never reached PixVerse: no message of PixVerse's may be attributed to it.
            await self.jobs.close_at_pixverse(job.job_id)
            if exc.account_rejected:
                await self._reject_account(job, exc.reason, exc.details)
            else:
                await self._account_failed(job)
                await self.finish(job.job_id, JobStatus.FAILED, error=exc.reason, error_details=exc.details)
        except asyncio.CancelledError:
            raise  # shutting down: the job stays executing and is recovered later
        except Exception:
            log.exception("Submitting job %s failed unexpectedly", job.job_id)
            await self.finish(job.job_id, JobStatus.FAILED, error="The bot could not submit the job to PixVerse")

    async def job_update(self, job_id: str, update: JobUpdate) -> None:
        """What the backend saw PixVerse say about a job."""
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
            started_now = await self.jobs.record_progress(
                job_id, update.status, now=self.clock(), message_id=update.message_id, progress=update.progress,
                content=update.content,
            )
            if started_now:
                await self._notify(job_id)
            return
        if update.status in FINAL:
            if update.status is JobStatus.COMPLETED:
                await self._account_succeeded(job)
            fields = result_fields(update)
            if not await self.finish(job_id, update.status, fields=fields):
                # Already ended (cancelled, timed out): PixVerse's late answer changes nothing.
                await self.jobs.close_at_pixverse(job_id)

    async def finish(
        self, job_id: str, status: JobStatus, *, error: str | None = None, error_details: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> bool:
        """Ends a job and frees its slot; False when it had already ended."""
        values = dict(fields or {})
        if error is not None:
            values["error"] = error
        if error_details is not None:
            values["error_details"] = error_details
        released = await placement.release(
            self._db, job_id, status, now=self.clock(), owner=self.owner, rng=self.rng, fields=values
        )
        if not released.released:
            return False
        await self._notify(job_id)
        for promoted in released.promoted:
            self._spawn(self._run(promoted), f"run {promoted.job_id}")
        return True

    async def _notify(self, job_id: str) -> None:
        if not self.listeners:
            return
        job = await self.jobs.get(job_id)
        if job is None:
            return
        for listener in self.listeners:
            try:
                await listener.job_changed(job)
            except Exception:
                log.exception("Telling %s about job %s failed", type(listener).__name__, job_id)

    # --- accounts -------------------------------------------------------------------

    async def _reject_account(self, job: Job, reason: str, details: str | None) -> None:
        """Discord or PixVerse refused the account: it leaves rotation, its jobs end, and
        the job that met the refusal is placed once more on another account if one is free."""
        await self.accounts.set_rotation(
            job.guild_id, job.account_channel_id, in_rotation=False, error=reason, error_details=details
        )
        log.warning("Account of channel %s left rotation: %s", job.account_channel_id, reason)
        if job.verb is not Verb.BUTTON and job.placement_attempts == 0:
            moved = await placement.requeue(
                self._db, job.job_id, now=self.clock(), owner=self.owner, rng=self.rng,
                error=f"Moved from channel {job.account_channel_id}: {reason}",
            )
            if moved is not None:
                self._spawn(self._run(moved), f"run {moved.job_id}")
        await self.account_removed(
            job.guild_id, job.account_channel_id, reason=f"The PixVerse account left rotation: {reason}"
        )

    async def account_removed(self, guild_id: str, channel_id: str, *, reason: str) -> None:
        """An account was deleted or left rotation: its jobs end now and free their slots."""
        for job in await self.jobs.holding_slots(channel_id):
            if job.guild_id == guild_id:
                await self.finish(job.job_id, JobStatus.FAILED, error=reason)

    async def account_available(self, guild_id: str) -> None:
        """An account was added or put back: waiting jobs may take its slots."""
        for job in await placement.promote_waiting(
            self._db, guild_id, now=self.clock(), owner=self.owner, rng=self.rng
        ):
            self._spawn(self._run(job), f"run {job.job_id}")

    async def _account_failed(self, job: Job) -> None:
        failures = await self._db.fetchone(
            "UPDATE accounts SET consecutive_failures = consecutive_failures + 1 WHERE channel_id = ?"
            " RETURNING consecutive_failures",
            (job.account_channel_id,),
        )
        if failures is not None and failures[0] >= MAX_CONSECUTIVE_FAILURES:
            await self.accounts.set_rotation(
                job.guild_id, job.account_channel_id, in_rotation=False,
                error=f"{failures[0]} jobs in a row failed", error_details="Put it back with /pixverse-account-reset",
            )

    async def _account_succeeded(self, job: Job) -> None:
        await self._db.execute(
            "UPDATE accounts SET consecutive_failures = 0 WHERE channel_id = ? AND consecutive_failures > 0",
            (job.account_channel_id,),
        )

    async def _retry_overloaded(self, job: Job, update: JobUpdate) -> None:
        if job.placement_attempts >= OVERLOAD_RETRIES or job.verb is Verb.BUTTON:
            await self.finish(
                job.job_id, JobStatus.FAILED, error="PixVerse is overloaded; try again later",
                error_details=update.error_details,
            )
            return
        await self.jobs.close_at_pixverse(job.job_id)
        self._spawn(self._retry_later(job, update), f"retry {job.job_id}")

    async def _retry_later(self, job: Job, update: JobUpdate) -> None:
        await asyncio.sleep(self.overload_retry_delay)
        moved = await placement.requeue(
            self._db, job.job_id, now=self.clock(), owner=self.owner, rng=self.rng,
            error=update.error_details or "PixVerse refused the job for load", allow_same=True,
        )
        if moved is not None:
            await self._run(moved)

    # --- sweep and recovery ---------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Dispatcher sweep failed")

    async def sweep(self) -> None:
        now = self.clock()
        await self.jobs.heartbeat(self.owner, now)
        for job in await self.jobs.timed_out(now=now, timeout=self.job_timeout):
            await self.finish(
                job.job_id, JobStatus.FAILED, error="Timed out",
                error_details=f"PixVerse did not finish the job within {self.job_timeout:g} seconds",
            )
        await self.recover()
        # An ended job whose PixVerse answer never came stops competing for messages.
        await self.jobs.close_stale_at_pixverse(before=now - self.job_timeout)
        await self.jobs.purge(before=now - RETENTION_SECONDS)

    def _owner_is_alive(self, owner: str | None, live: set[str]) -> bool:
        if owner is None or owner not in live:
            return False
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit() or owner == self.owner:
            return owner == self.owner or host != socket.gethostname()
        # Same host: a pid that is gone, or that is our own (a container restarted with
        # the same pid), is a dead predecessor even while its lease has not expired.
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def recover(self) -> None:
        """Takes over the jobs of processes that died: resumes them, or fails those past
        their timeout; gives waiting jobs the slots that are free."""
        now = self.clock()
        live = set(await self.jobs.live_owners(now=now, ttl=self.lease_ttl))
        live_alive = [owner for owner in live if self._owner_is_alive(owner, live)]
        for job in await self.jobs.orphaned(live_alive):
            if not await self.jobs.claim(job, self.owner):
                continue
            started = job.submitted_at or job.created_at
            if started + self.job_timeout < now:
                await self.finish(
                    job.job_id, JobStatus.FAILED, error="Timed out",
                    error_details="The bot stopped while the job ran and it was past its timeout when the bot came back",
                )
            elif job.submitted_at is None:
                self._spawn(self._run(job), f"run {job.job_id}")
            else:
                log.info("Resuming job %s of a stopped process", job.job_id)
                token = await self.accounts.decrypt_token(job.guild_id, job.account_channel_id)
                if token is None:
                    await self.finish(job.job_id, JobStatus.FAILED, error="The PixVerse account was deleted")
                    continue
                register_secrets(token)
                try:
                    await self.backend.resume(job, token)
                except Exception:
                    log.exception("Resuming job %s failed; the sweep will time it out", job.job_id)
        for guild_id in await self.jobs.guilds_with_waiting_jobs():
            await self.account_available(guild_id)
        await self.jobs.forget_dead_owners(now=now, ttl=self.lease_ttl)
