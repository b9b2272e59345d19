"""A replyUrl receiver on 127.0.0.1 for the tests: every JSON body POSTed to it, in arrival order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.net import free_port


@dataclass
class Receiver:
    url: str
    bodies: list[dict] = field(default_factory=list)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


@contextlib.asynccontextmanager
async def reply_receiver(status: int = 204) -> AsyncIterator[Receiver]:
    port = free_port()
    received = Receiver(f"http://127.0.0.1:{port}/hook")

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        received.bodies.append(body)
        await received.queue.put(body)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield received
    finally:
        await runner.cleanup()
