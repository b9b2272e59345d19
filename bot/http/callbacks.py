"""replyUrl: the finished job is POSTed to the URL its HTTP caller gave."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from bot.dispatch.models import API_REQUESTER, FINAL, Job

log = logging.getLogger(__name__)


class ReplyPoster:
    """A dispatcher listener: POSTs each finished API job with a replyUrl, with retries."""

    def __init__(
        self,
        public_job: Callable[[Job], Awaitable[dict]],
        *,
        attempts: int = 3,
        timeout: float = 10.0,
        backoff: float = 1.0,
    ) -> None:
        self._public_job = public_job
        self._attempts = attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    async def job_changed(self, job: Job) -> None:
        url = job.params.get("replyUrl")
        if job.request_channel_id != API_REQUESTER or job.status not in FINAL or not url:
            return
        if urlsplit(url).scheme not in ("http", "https"):  # validated at submission; checked again here
            return
        body = await self._public_job(job)
        task = asyncio.create_task(self._post(job.job_id, url, body), name=f"replyUrl {job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, job_id: str, url: str, body: dict) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        data = json.dumps(body, ensure_ascii=False)
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._session.post(
                    url, data=data, headers={"Content-Type": "application/json"}, allow_redirects=False
                ) as response:
                    if response.status < 500 and response.status != 429:
                        if response.status >= 400:
                            log.warning("replyUrl of job %s answered %s", job_id, response.status)
                        return
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                reason = type(exc).__name__
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        log.warning("replyUrl of job %s failed %d times (last: %s)", job_id, self._attempts, reason)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
