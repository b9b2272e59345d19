"""When each job's status message is written: the newest state of a job wins, within Discord's
limits.

- A job's message is written at once when its state word changes (``waiting`` → ``started`` →
  ``progress`` → the final state), otherwise at most once every ``job_every`` seconds (a new
  percentage, a new queue position): the newest state replaces one not written yet, so a burst
  of progress becomes one write.
- The writes of one channel go one at a time, at most ``burst`` per ``window`` seconds, the
  state changes first (oldest first), then the progress most overdue. Other channels go on
  in parallel.
- A write that failed for a reason that passes (Discord's 429 after discord.py's own retries,
  a 5xx, a dropped connection) is tried again, unless a newer state replaced it meanwhile.
- After the final state nothing older is written over it. What is kept per job is dropped
  when its final state is written (and bounded for jobs ended elsewhere).

It knows nothing of Discord: ``write(job, position)`` does the writing, ``transient(exc)``
says which failures pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.dispatch.models import FINAL, Job, JobStatus

log = logging.getLogger(__name__)

JOB_EVERY_SECONDS = 3.0
CHANNEL_BURST, CHANNEL_WINDOW_SECONDS = 5, 5.0
RETRY_SECONDS = 2.0
RETRIES = 5  # a state whose write keeps failing for a passing reason is given up after this many
TRACKED_JOBS = 10_000

_RANK = {JobStatus.CREATED: 0, JobStatus.STARTED: 1, JobStatus.PROGRESS: 2}


def stage(job: Job) -> str:
    """The state word a member reads; a change of it is written at once."""
    return job.state_word


def _order(job: Job) -> tuple[int, float, int]:
    """Which of two snapshots of a job is newer: a final one always; else the later update, and
    between two of the same moment the further state (a progress told just after its start)."""
    return (1 if job.status in FINAL else 0, job.updated_at, _RANK.get(job.status, 3))


@dataclass
class _Pending:
    job: Job
    position: Any
    shown: tuple
    attempts: int = 0


@dataclass
class _Channel:
    pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)
    written: deque[float] = field(default_factory=deque)  # when its last writes went out
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


@dataclass
class _Shown:
    shown: tuple  # what the message shows (_key: its state word first)
    at: float
    order: tuple


class StatusBoard:
    def __init__(
        self,
        write: Callable[[Job, Any], Awaitable[None]],
        *,
        transient: Callable[[BaseException], bool] = lambda exc: False,
        job_every: float = JOB_EVERY_SECONDS,
        burst: int = CHANNEL_BURST,
        window: float = CHANNEL_WINDOW_SECONDS,
        retry_after: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._transient = transient
        self.job_every = job_every
        self.burst = burst
        self.window = window
        self.retry_after = retry_after
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._shown: OrderedDict[str, _Shown] = OrderedDict()  # job id -> what its message shows
        self._ended: OrderedDict[str, None] = OrderedDict()  # jobs whose final state is written
        self._writing: dict[str, tuple] = {}  # job id -> the order of the state being written now
        self._closing = False

    def shown(self, job: Job, position: Any = None) -> None:
        """The job's message was just written with this state by someone else (the command's
        reply): the next progress waits its turn after it."""
        self._remember(job.job_id, _Shown(self._key(job, position), self._clock(), _order(job)))

    def update(self, job: Job, position: Any = None) -> None:
        """The job's newest state: written soon, unless something newer comes first."""
        if self._closing or job.job_id in self._ended or self._older(job):
            return  # ended, or an older snapshot told late: never written over something newer
        key = self._key(job, position)
        channel = self._channels.get(job.request_channel_id)
        pending = channel.pending.get(job.job_id) if channel is not None else None
        if pending is not None:
            if _order(job) < _order(pending.job):
                return
            pending.job, pending.position, pending.shown, pending.attempts = job, position, key, 0
        else:
            last = self._shown.get(job.job_id)
            if last is not None and last.shown == key and job.job_id not in self._writing:
                return  # the message shows this already
            if channel is None:
                channel = self._channels[job.request_channel_id] = _Channel()
            channel.pending[job.job_id] = _Pending(job, position, key)
        channel.wake.set()
        if channel.task is None:
            channel.task = asyncio.create_task(self._drain(job.request_channel_id, channel),
                                               name=f"status messages of channel {job.request_channel_id}")

    def has_shown_end(self, job_id: str) -> bool:
        """True when this board wrote the job's final state (remembered for the last TRACKED_JOBS)."""
        return job_id in self._ended

    def pending(self) -> int:
        return sum(len(channel.pending) for channel in self._channels.values())

    async def close(self, grace: float = 5.0) -> None:
        """Writes what is pending for up to ``grace`` seconds (the final states first), then stops."""
        self._closing = True
        tasks = [channel.task for channel in self._channels.values() if channel.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._channels.clear()

    # --- inside ---------------------------------------------------------------------------

    @staticmethod
    def _key(job: Job, position: Any) -> tuple:
        return (stage(job), job.progress if job.executing else None, position)

    def _older(self, job: Job) -> bool:
        """True when the job's message shows, or is being written with, a newer state."""
        last = self._shown.get(job.job_id)
        writing = self._writing.get(job.job_id)
        order = _order(job)
        return (last is not None and order < last.order) or (writing is not None and order < writing)

    def _remember(self, job_id: str, shown: _Shown) -> None:
        self._shown[job_id] = shown
        self._shown.move_to_end(job_id)
        while len(self._shown) > TRACKED_JOBS:
            self._shown.popitem(last=False)

    def _next(self, channel: _Channel) -> tuple[str | None, float]:
        """The job to write now, or None and how long until one is due."""
        now = self._clock()
        due: tuple[float, str] | None = None
        wait = float("inf")
        for job_id, pending in channel.pending.items():
            last = self._shown.get(job_id)
            if last is None or last.shown[0] != pending.shown[0] or pending.job.status in FINAL:
                return job_id, 0.0  # a change of state: the oldest first
            ready = last.at + self.job_every - now
            if ready <= 0:
                if due is None or last.at < due[0]:
                    due = (last.at, job_id)
            else:
                wait = min(wait, ready)
        return (due[1], 0.0) if due else (None, wait)

    async def _pace(self, channel: _Channel) -> None:
        """Until the channel may take one more write (``burst`` per ``window`` seconds)."""
        while True:
            now = self._clock()
            while channel.written and now - channel.written[0] >= self.window:
                channel.written.popleft()
            if len(channel.written) < self.burst:
                return
            await asyncio.sleep(self.window - (now - channel.written[0]))

    async def _drain(self, channel_id: str, channel: _Channel) -> None:
        try:
            while channel.pending:
                await self._pace(channel)
                job_id, wait = self._next(channel)
                if job_id is None:
                    channel.wake.clear()
                    try:
                        await asyncio.wait_for(channel.wake.wait(), timeout=wait)
                    except TimeoutError:
                        pass
                    continue
                pending = channel.pending.pop(job_id)
                channel.written.append(self._clock())
                self._writing[job_id] = _order(pending.job)
                try:
                    await self._write(pending.job, pending.position)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    passing = self._transient(exc)
                    if passing and not self._closing and pending.attempts + 1 < RETRIES:
                        log.info("Writing the message of job %s failed (%s); trying again", job_id, type(exc).__name__)
                        newer = channel.pending.get(job_id)
                        if newer is None or _order(newer.job) < _order(pending.job):
                            pending.attempts += 1  # what failed is still the newest (a final one always)
                            channel.pending[job_id] = pending
                            channel.pending.move_to_end(job_id, last=False)
                        await asyncio.sleep(self.retry_after * (pending.attempts or 1))
                    else:
                        log.warning("Could not write the message of job %s in channel %s (%s)", job_id, channel_id,
                                    type(exc).__name__, exc_info=not passing)
                    continue
                finally:
                    self._writing.pop(job_id, None)
                if pending.job.status in FINAL:
                    self._shown.pop(job_id, None)
                    self._ended[job_id] = None
                    while len(self._ended) > TRACKED_JOBS:
                        self._ended.popitem(last=False)
                    channel.pending.pop(job_id, None)  # nothing is written over the final state
                else:
                    self._remember(job_id, _Shown(pending.shown, self._clock(), _order(pending.job)))
        finally:
            channel.task = None
            if self._channels.get(channel_id) is channel and not channel.pending:
                del self._channels[channel_id]
