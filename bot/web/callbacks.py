"""replyUrl: each state of a job (started, progress, the final one) is POSTed to the URL its HTTP
caller gave, in order, one request at a time per job; only the final state is retried.

The final state is recorded as told (``told``: Dispatcher.final_shown) once the receiver took it or
refused it for good. Until then the store keeps it to tell, and the dispatcher tells it again after
a crash, or after the receiver was down for the live path's tries (Dispatcher.show_ends): every
minute for a day, one try each time after a process's first three. Delivery is at least once: a
crash between a POST and its record posts that final state again."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
import ipaddress
import socket

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from bot.dispatch.models import API_REQUESTER, FINAL, Job
from bot.addresses import client_host, host_verdict, is_forbidden_ip

log = logging.getLogger(__name__)


class PublicOnlyResolver(AbstractResolver):
    """Resolves replyUrl hosts to public addresses only, at connect time, so a name that
    resolves (or re-resolves) to a private or loopback address cannot reach the host's
    own network. Numeric spellings that are not IP literals to aiohttp (``2130706433``,
    ``0x7f.1``) come here too and are judged by what they resolve to. IP literals never
    reach a resolver; ReplyPoster checks those itself, on the same normalised host."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        public = [r for r in results if not is_forbidden_ip(ipaddress.ip_address(r["host"].split("%", 1)[0]))]
        if not public:
            raise OSError(f"{host} resolves only to private or local addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


# Jobs whose final state was told, remembered so that no later state follows it.
ENDED_REMEMBERED = 10_000
# What became of a job's final state (ReplyPoster._ended).
POSTING, TOLD, NOT_TAKEN = "posting", "told", "not taken"
# Answers under 500 that ask to be tried again (Request Timeout, Too Early, Too Many Requests); any
# other is the receiver's last word on the state.
RETRIED = frozenset({408, 425, 429})


class ReplyPoster:
    """A dispatcher listener: POSTs an API job's states to its replyUrl: started, progress (as often as
    the dispatcher tells, at most every 5 s), and the final state, which alone is retried."""

    def __init__(
        self,
        public_job: Callable[[Job], Awaitable[dict]],
        *,
        attempts: int = 3,
        timeout: float = 10.0,
        backoff: float = 1.0,
        allow_private: bool = False,
        told: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._public_job = public_job
        self._told = told
        self._attempts = attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._backoff = backoff
        self._allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._last: dict[str, asyncio.Task] = {}  # job id -> its latest POST: the next waits for it
        self._ended: dict[str, str] = {}  # job id -> POSTING / TOLD / NOT_TAKEN (bounded, oldest dropped)

    async def job_progressed(self, job: Job) -> None:
        await self.job_changed(job)

    async def job_changed(self, job: Job) -> None:
        url = job.params.get("replyUrl")
        if job.request_channel_id != API_REQUESTER or not url:
            return
        # Validated at submission; checked again here on the very URL object that is posted to,
        # so the host judged is the host aiohttp connects to.
        final = job.status in FINAL
        try:
            target = yarl.URL(url)
        except (ValueError, TypeError):
            target = None
        host = client_host(target) if target is not None else None
        if target is None or target.scheme not in ("http", "https") or not host:
            if final:
                await self._record_told(job.job_id)  # never postable: not looked for again
            return
        if not self._allow_private and host_verdict(host) is False:
            log.warning("replyUrl of job %s points to a private or local address; not posted", job.job_id)
            if final:
                await self._record_told(job.job_id)
            return
        # Its place in the job's line is taken now, before anything is awaited: states go out in
        # the order they were told, whatever each one's body takes to make.
        ended = self._ended.get(job.job_id)
        if ended is not None:
            if final and ended == TOLD:
                await self._record_told(job.job_id)  # told again (Dispatcher.show_ends) after recording it failed
            if not (final and ended == NOT_TAKEN):
                return  # a state told after the final one (a progress raced a cancel): never after it
        previous = self._last.get(job.job_id)
        if not final and previous is not None and not previous.done():
            return  # the receiver has not taken the last one yet: a newer state replaces this one
        if final:
            self._ended.pop(job.job_id, None)
            self._ended[job.job_id] = POSTING
            if len(self._ended) > ENDED_REMEMBERED:
                self._ended.pop(next(iter(self._ended)))
        task = asyncio.create_task(self._post_after(previous, job, target, final, again=ended == NOT_TAKEN),
                                   name=f"replyUrl {job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if final:
            self._last.pop(job.job_id, None)
        else:
            self._last[job.job_id] = task
            task.add_done_callback(lambda done, job_id=job.job_id: self._forget(job_id, done))

    def _forget(self, job_id: str, done: asyncio.Task) -> None:
        if self._last.get(job_id) is done:
            del self._last[job_id]

    async def _post_after(self, previous: asyncio.Task | None, job: Job, url: yarl.URL, final: bool, *,
                          again: bool = False) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # in order: the earlier state first
        # A final state told again after its tries failed gets one try each time (every minute).
        attempts = self._attempts if final and not again else 1
        try:
            body = await self._public_job(job)
            reason = await self._post(job.job_id, url, body, attempts=attempts)
            failure = None if reason is None else f"failed {attempts} time(s) (last: {reason})"
        except Exception as exc:  # its body could not be made (the database): as a receiver that did not answer
            failure = f"not posted: {type(exc).__name__}: {exc}"
        taken = failure is None
        if failure is not None:
            # Warned once; each later try (told again, every minute) only at DEBUG.
            later = "; told again every minute for a day" if final and self._told is not None else ""
            (log.debug if again else log.warning)("replyUrl of job %s %s%s", job.job_id, failure, later)
        if not final:
            return
        if self._ended.get(job.job_id) == POSTING:
            self._ended[job.job_id] = TOLD if taken else NOT_TAKEN
        if taken:
            await self._record_told(job.job_id)

    async def _record_told(self, job_id: str) -> None:
        if self._told is None:
            return
        try:
            await self._told(job_id)
        except Exception as exc:  # told again within minutes (Dispatcher.show_ends): recorded then
            log.warning("Could not record that job %s's final state was posted: %s: %s", job_id,
                        type(exc).__name__, exc)

    async def _post(self, job_id: str, url: yarl.URL, body: dict, *, attempts: int) -> str | None:
        """None when the receiver took the body, or refused it for good (a 4xx not in RETRIED); else
        why the last try failed."""
        if self._session is None:
            connector = None if self._allow_private else aiohttp.TCPConnector(resolver=PublicOnlyResolver())
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        # ASCII: the body may carry what Discord sent as it sent it (embeds), a lone surrogate too,
        # which UTF-8 cannot encode; JSON's escapes carry anything.
        data = json.dumps(body)
        for attempt in range(1, attempts + 1):
            try:
                async with self._session.post(
                    url, data=data, headers={"Content-Type": "application/json"}, allow_redirects=False
                ) as response:
                    if response.status < 500 and response.status not in RETRIED:
                        if response.status >= 400:
                            log.warning("replyUrl of job %s answered %s", job_id, response.status)
                        return None
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                reason = type(exc).__name__
            if attempt < attempts:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        return reason

    async def close(self, *, grace: float = 5.0) -> None:
        # Replies already under way get a moment; a final state cut short stays to tell in the store,
        # and the next process POSTs it (Dispatcher.show_ends).
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
