"""A client of useapi's PixVerse v1 API written the way real v1 clients are (the phpBB extension
"AI Labs" is the model): multipart/form-data bodies in which every field is sent on every request,
numbers as text, unset fields empty; 429 answers retried; success read from ``code == 200`` and
``status``; videos found by ``attachments[].content_type``; buttons by the ``buttons`` labels. And a
replyUrl receiver on 127.0.0.1 that checks every callback as such a client relies on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.receiver import local_post_server

EXECUTING = ("created", "started", "progress")
FINAL = ("completed", "failed", "moderated", "cancelled")
# What a v1 client sends with every job request, whatever the verb: unset ones go empty.
JOB_FIELDS = ("prompt", "style", "aspect_ratio", "negative_prompt", "character", "seed_value", "discord", "maxJobs",
              "replyUrl", "replyRef")
RETRIES_429 = 80  # as AI Labs: 80 tries


@dataclass
class V1Client:
    base: str  # http://host:port/v1/pixverse
    api_token: str
    session: aiohttp.ClientSession
    max_jobs: int = 3  # the account's maxJobs as the client's settings say it; sent as text every time
    reply_url: str = ""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    waits: list[float] = field(default_factory=list)  # every Retry-After the client honoured

    async def _post(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None):
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)  # text, even the numbers
        for name, (filename, data) in (files or {}).items():
            form.add_field(name, data, filename=filename, content_type="application/octet-stream")
        async with self.session.post(self.base + path, data=form,
                                     headers={"Authorization": f"Bearer {self.api_token}"}) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response.headers

    async def configure(self, *, channel: str, server: str, discord: str) -> int:
        status, _, _ = await self._post(f"/account/{channel}", {
            "discord": discord, "server": server, "channel": channel, "maxJobs": str(self.max_jobs)})
        return status

    async def job(self, verb: str, *, reply_ref: str = "", files: dict[str, tuple[str, bytes]] | None = None,
                  **given: str) -> dict:
        """Submits like a v1 client: every field, the unset ones empty; a 429 is tried again after
        its Retry-After (the client's own 15 s when absent), up to 80 times."""
        fields = {name: "" for name in JOB_FIELDS}
        fields.update(maxJobs=str(self.max_jobs), replyUrl=self.reply_url, replyRef=reply_ref)
        fields.update(given)
        return await self._until_accepted(f"/{verb}", fields, files)

    async def press(self, jobid: str, button: str, *, reply_ref: str = "") -> dict:
        fields = {"jobid": jobid, "button": button, "discord": "", "maxJobs": str(self.max_jobs), "prompt": "",
                  "replyUrl": self.reply_url, "replyRef": reply_ref}
        return await self._until_accepted("/button", fields)

    async def _until_accepted(self, path: str, fields: dict[str, str],
                              files: dict[str, tuple[str, bytes]] | None = None) -> dict:
        for _ in range(RETRIES_429):
            status, body, headers = await self._post(path, fields, files)
            if status != 429:
                assert status == 200, body
                return body
            assert body["code"] == 429 and body["executingJobs"], body
            wait = float(headers.get("Retry-After", 15))
            assert wait >= 1
            self.waits.append(wait)
            await self.sleep(wait)
        raise AssertionError("still busy after 80 tries")

    async def get(self, jobid: str) -> dict:
        async with self.session.get(self.base + "/jobs/", params={"jobid": jobid},
                                    headers={"Authorization": f"Bearer {self.api_token}"}) as response:
            assert response.status == 200
            return await response.json()

    @staticmethod
    def succeeded(job: dict) -> bool:
        """AI Labs' test of a finished job."""
        return job["code"] == 200 and job["status"] == "completed"

    @staticmethod
    def videos(job: dict) -> list[str]:
        return [a["url"] for a in job.get("attachments", []) if "video" in a.get("content_type", "")]


@dataclass
class CallbackChecker:
    """Receives replyUrl POSTs and checks each against what v1 clients rely on."""

    url: str
    by_job: dict[str, list[dict]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self, body: dict) -> None:
        jobid = body.get("jobid")
        seen = self.by_job.setdefault(jobid, [])
        status, code = body.get("status"), body.get("code")
        if not isinstance(jobid, str) or status not in EXECUTING + FINAL:
            self.problems.append(f"malformed callback {body!r}")
            return
        if seen and seen[-1]["status"] in FINAL:
            self.problems.append(f"{jobid}: {status} after the final {seen[-1]['status']}")
        order = ("created", "started", "progress")
        if seen and status in order and seen[-1]["status"] in order and order.index(status) < order.index(seen[-1]["status"]):
            self.problems.append(f"{jobid}: {status} after {seen[-1]['status']}")
        if status != "progress" and any(b["status"] == status for b in seen):
            self.problems.append(f"{jobid}: {status} twice")
        expected_code = {"moderated": 422, "failed": body.get("error") == "Timed out" and 408 or 500}.get(status, 200)
        if code != expected_code:
            self.problems.append(f"{jobid}: {status} with code {code}")
        if status == "completed":
            if not body.get("buttons") or not all(isinstance(b, str) for b in body["buttons"]):
                self.problems.append(f"{jobid}: completed without button labels")
            if not body.get("attachments") or not all("video" in a.get("content_type", "") for a in body["attachments"]):
                self.problems.append(f"{jobid}: completed without video attachments")
        seen.append(body)
        self.arrived.set()

    async def final(self, jobid: str, timeout: float = 15) -> list[dict]:
        """Every callback of a job once its final one arrived."""
        async def ended() -> None:
            while not any(b["status"] in FINAL for b in self.by_job.get(jobid, [])):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(ended(), timeout)
        return self.by_job[jobid]


@contextlib.asynccontextmanager
async def callback_checker() -> AsyncIterator[CallbackChecker]:
    checker = CallbackChecker("")

    async def receive(request: web.Request) -> web.Response:
        try:
            checker.check(json.loads(await request.read()))
        except ValueError:
            checker.problems.append("a callback that is not JSON")
        return web.Response(status=200)

    async with local_post_server("/pixverse/callback", receive) as url:
        checker.url = url
        yield checker
