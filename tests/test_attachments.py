"""A member's attachment is read from Discord's CDN within the image limit, whatever size was announced."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from cogs.jobs import read_at_most

CHUNK = 64 * 1024


@pytest.fixture
async def cdn():
    """A CDN serving ``/<n>`` as n bytes, 64 KiB a write, counting what each answer managed to write."""
    written: dict[int, int] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = size
        await response.prepare(request)
        written[size] = 0
        try:
            while written[size] < size:
                part = min(CHUNK, size - written[size])
                await response.write(b"\0" * part)  # waits while the client does not read
                written[size] += part
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/gone", gone)
    app.router.add_get("/{size}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}", written
    await runner.cleanup()


async def test_a_body_within_the_limit_is_read_whole(cdn):
    session, base, _ = cdn
    assert await read_at_most(session, f"{base}/{1024 * 1024}", 1024 * 1024) == b"\0" * (1024 * 1024)


async def test_a_body_past_the_limit_stops_the_download_there(cdn):
    session, base, written = cdn
    size = 256 * 1024 * 1024
    assert await read_at_most(session, f"{base}/{size}", 1024 * 1024) is None
    await asyncio.sleep(0.2)  # the server sees the connection go
    # What the server could write past the limit is what the sockets' buffers held, not the body.
    assert written[size] < 64 * 1024 * 1024


async def test_an_error_answer_is_the_clients_error_with_its_status(cdn):
    session, base, _ = cdn
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await read_at_most(session, f"{base}/gone", 10)
    assert info.value.status == 404
