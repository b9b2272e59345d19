"""The replyUrl poster: a job's states go out in the order they were told, never a state after the final one."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bot.dispatch.models import API_REQUESTER, Job, JobState, JobStatus, Verb
from bot.web.callbacks import ReplyPoster
from tests.receiver import reply_receiver


def api_job(url: str) -> Job:
    return Job("job:r", "1", "2", "3", 1, API_REQUESTER, API_REQUESTER, Verb.CREATE, {"prompt": "x", "replyUrl": url},
               None, JobStatus.STARTED, JobState.SUBMITTED, None, 0, 1, 1, 1.0, 1.0, submitted_at=1.0)


async def test_states_go_out_in_order_and_nothing_follows_the_final_one():
    async def body(job: Job) -> dict:
        # The started state's body is slow to make, the final one's fast: the order must hold anyway.
        await asyncio.sleep(0.3 if job.status is JobStatus.STARTED else 0)
        return {"status": job.status.value}

    async with reply_receiver() as receiver:
        poster = ReplyPoster(body, allow_private=True)
        started = api_job(receiver.url)
        ended = replace(started, status=JobStatus.CANCELLED, state=JobState.DONE)
        await asyncio.gather(poster.job_changed(started), poster.job_changed(ended))
        await poster.job_progressed(replace(started, status=JobStatus.PROGRESS, progress=40))  # raced the cancel
        await poster.close()
        assert [b["status"] for b in receiver.bodies] == ["started", "cancelled"]
