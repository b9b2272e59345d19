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
    status: int = 204  # what it answers; a test may change it between POSTs


@contextlib.asynccontextmanager
async def local_post_server(path: str, handler) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 answering POSTs to ``path`` with ``handler``; yields its URL."""
    port = free_port()
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def reply_receiver(status: int = 204) -> AsyncIterator[Receiver]:
    received = Receiver("", status=status)

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        received.bodies.append(body)
        await received.queue.put(body)
        return web.Response(status=received.status)

    async with local_post_server("/hook", receive) as url:
        received.url = url
        yield received
