"""PIXVERSE_BACKEND=simulated: jobs run in-process for demos and load tests. It generates nothing."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from bot.dispatch.backends.base import JobUpdate, PixverseBackend
from bot.dispatch.models import Job, JobStatus
from bot.dispatch.validation import BUTTONS

log = logging.getLogger(__name__)

SIMULATED_NOTE = "Simulated job: the simulated backend generates no video"


class SimulatedBackend(PixverseBackend):
    def __init__(
        self, *, duration: float = 5.0, failure_rate: float = 0.0, rng: random.Random | None = None, clock=time.time
    ) -> None:
        self.duration = duration
        self.failure_rate = failure_rate
        self._rng = rng or random.Random()
        self._clock = clock
        self._tasks: dict[str, asyncio.Task] = {}

    async def submit(self, job: Job, token: str) -> None:
        self._start(job, self.duration)

    async def press(self, job: Job, parent: Job, token: str) -> None:
        self._start(job, self.duration)

    async def resume(self, jobs: list[Job], token: str) -> None:
        for job in jobs:
            elapsed = self._clock() - (job.submitted_at or job.created_at)
            self._start(job, max(0.0, self.duration - elapsed))

    def _start(self, job: Job, remaining: float) -> None:
        task = asyncio.create_task(self._simulate(job, remaining), name=f"simulated {job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    async def _simulate(self, job: Job, remaining: float) -> None:
        message_id = f"simulated-{job.job_id}"
        try:
            await asyncio.sleep(remaining * 0.2)
            await self.events.job_update(job.job_id, JobUpdate(JobStatus.STARTED, message_id=message_id))
            await asyncio.sleep(remaining * 0.4)
            await self.events.job_update(job.job_id, JobUpdate(JobStatus.PROGRESS, message_id=message_id, progress=50))
            await asyncio.sleep(remaining * 0.4)
            if self._rng.random() < self.failure_rate:
                update = JobUpdate(JobStatus.FAILED, error="Simulated failure", error_details=SIMULATED_NOTE)
            else:
                update = JobUpdate(
                    JobStatus.COMPLETED,
                    message_id=message_id,
                    content=f"{SIMULATED_NOTE} (prompt: {job.prompt or job.params.get('button')})",
                    buttons=self._buttons(job),
                )
            await self.events.job_update(job.job_id, update)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Simulated job %s failed unexpectedly", job.job_id)

    @staticmethod
    def _buttons(job: Job) -> tuple[dict, ...]:
        # Like PixVerse, every result (button results too) carries the buttons again.
        return tuple({"label": label, "custom_id": f"simulated:{job.job_id}:{label}", "message_flags": 0} for label in BUTTONS)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
