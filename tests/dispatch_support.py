"""Shared pieces for the dispatcher tests: a backend the test drives by hand, and setup."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bot.store.sqlite.accounts import AccountRepository
from bot.store.sqlite.database import Database
from bot.dispatch.backends.base import JobUpdate, PixverseBackend, SubmitError
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import Job, JobStatus


class ManualBackend(PixverseBackend):
    """Records what the dispatcher hands over; the test says what PixVerse answers."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []  # (job id, token)
        self.pressed: list[tuple[str, str, str]] = []  # (job id, parent job id, token)
        self.resumed: list[str] = []
        self.fail_with: SubmitError | None = None
        self.fail_next: SubmitError | None = None  # fails one submission only

    def _maybe_fail(self) -> None:
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure
        if self.fail_with is not None:
            raise self.fail_with

    async def submit(self, job: Job, token: str) -> None:
        self._maybe_fail()
        self.submitted.append((job.job_id, token))

    async def press(self, job: Job, parent: Job, token: str) -> None:
        self._maybe_fail()
        self.pressed.append((job.job_id, parent.job_id, token))

    async def resume(self, jobs: list[Job], token: str) -> None:
        self.resumed.extend(job.job_id for job in jobs)

    async def complete(self, job_id: str, buttons=("U1", "V1", "ReDo")) -> None:
        await self.events.job_update(
            job_id,
            JobUpdate(
                JobStatus.COMPLETED,
                message_id=f"msg-{job_id}",
                content="done",
                attachments=({"url": "https://cdn.example/v.mp4", "filename": "v.mp4", "size": 1},),
                buttons=tuple({"label": b, "custom_id": f"cid-{b}", "message_flags": 0} for b in buttons),
            ),
        )


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Listener:
    seen: list[tuple[str, str]] = field(default_factory=list)

    async def job_changed(self, job: Job) -> None:
        self.seen.append((job.job_id, job.status.value))


async def add_account(repository: AccountRepository, guild: str, channel: str, *, max_jobs: int, user: str) -> None:
    await repository.upsert(
        guild_id=guild, channel_id=channel, token=f"token-for-{channel}", discord_user_id=user, max_jobs=max_jobs
    )


def jobs_of(db: Database):
    """The job store of a database of either engine (it needs no token key)."""
    return db.stores(None).jobs


async def slots(db: Database, channel: str) -> int:
    """The slots of an account in use, as the store counts them."""
    return len(await jobs_of(db).holding_slots(channel))


def make_dispatcher(db, repository, backend, *, clock=None, listener=None, queue_size=0, timeout=900.0, seed=7):
    return Dispatcher(
        jobs_of(db), repository, backend, queue_size=queue_size, job_timeout=timeout, rng=random.Random(seed),
        clock=clock or Clock(), listeners=[listener] if listener else [], overload_retry_delay=0,
    )


class _QuietClient:
    """The Discord client of a DiscordBackend that reaches no Discord."""

    async def close(self) -> None:
        pass


async def _no_history(channel_id, after):
    return
    yield  # pragma: no cover


def discord_backend_dispatcher(db, repository, *, application_id: str, listener, clock=None):
    """A DiscordBackend reading no channel history (its ``submit`` left to the test to replace),
    and the real dispatcher over it on ``db``'s job store."""
    from bot.dispatch.backends.discord import DiscordBackend

    jobs = jobs_of(db)
    backend = DiscordBackend(_QuietClient(), repository, jobs, _no_history, application_id=application_id)
    dispatcher = Dispatcher(jobs, repository, backend, rng=random.Random(3), clock=clock or Clock(),
                            listeners=[listener])
    return backend, dispatcher
