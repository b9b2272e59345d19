"""The replyUrl poster: a job's states go out in the order they were told, never a state after the final one."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aiohttp import web

from bot.dispatch.models import API_REQUESTER, Job, JobState, JobStatus, Verb
from bot.web.callbacks import ReplyPoster
from tests.e2e.test_http_api import free_port


def api_job(url: str) -> Job:
    return Job("job:r", "1", "2", "3", 1, API_REQUESTER, API_REQUESTER, Verb.CREATE, {"prompt": "x", "replyUrl": url},
               None, JobStatus.STARTED, JobState.SUBMITTED, None, 0, 1, 1, 1.0, 1.0, submitted_at=1.0)


async def test_states_go_out_in_order_and_nothing_follows_the_final_one():
    received: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.json())["status"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    async def body(job: Job) -> dict:
        # The started state's body is slow to make, the final one's fast: the order must hold anyway.
        await asyncio.sleep(0.3 if job.status is JobStatus.STARTED else 0)
        return {"status": job.status.value}

    poster = ReplyPoster(body, allow_private=True)
    try:
        started = api_job(f"http://127.0.0.1:{port}/cb")
        ended = replace(started, status=JobStatus.CANCELLED, state=JobState.DONE)
        await asyncio.gather(poster.job_changed(started), poster.job_changed(ended))
        await poster.job_progressed(replace(started, status=JobStatus.PROGRESS, progress=40))  # raced the cancel
        await poster.close()
        assert received == ["started", "cancelled"]
    finally:
        await runner.cleanup()
