"""PIXVERSE_BACKEND=simulated through the real dispatcher."""

from __future__ import annotations

import asyncio
import random

from bot.dispatch.backends.simulated import SIMULATED_NOTE, SimulatedBackend
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import JobStatus, Verb
from bot.store.sqlite.jobs import JobRepository
from tests.dispatch_support import Listener, add_account

G, A1 = "900000000000000001", "900000000000000011"


async def run_one(database, repository, backend) -> tuple[Listener, str]:
    listener = Listener()
    dispatcher = Dispatcher(JobRepository(database), repository, backend, rng=random.Random(1), listeners=[listener])
    try:
        await add_account(repository, G, A1, max_jobs=1, user="1")
        placed = await dispatcher.submit(
            guild_id=G, requester_id="5", request_channel_id="6", verb=Verb.CREATE,
            body={"prompt": "a fox", "style": "Anime"},
        )
        for _ in range(200):
            if any(status in ("completed", "failed") for _, status in listener.seen):
                break
            await asyncio.sleep(0.01)
        job = await dispatcher.get(placed.job.job_id, G)
        return listener, job
    finally:
        await dispatcher.close()


async def test_simulated_job_completes_with_buttons_and_no_video(database, repository):
    listener, job = await run_one(database, repository, SimulatedBackend(duration=0.05, failure_rate=0))
    assert [status for _, status in listener.seen] == ["started", "completed"]
    assert job.status is JobStatus.COMPLETED
    assert job.attachments == []
    assert job.content == f"{SIMULATED_NOTE} (prompt: a fox)"
    assert [b["label"] for b in job.buttons] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", "🔀"]


async def test_simulated_failures_follow_the_rate(database, repository):
    listener, job = await run_one(database, repository, SimulatedBackend(duration=0.05, failure_rate=1))
    assert (job.status, job.error) == (JobStatus.FAILED, "Simulated failure")
