"""``python -m bot`` against a Discord that accepts connections and never answers: each startup step
has its deadline (DISCORD_CONNECT_TIMEOUT_SECONDS), past it one line naming the URL and the wait,
exit 1; SIGTERM while it waits is a clean stop, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.e2e.test_process_e2e import bot_env, finish, start_process

DEADLINE = 2  # DISCORD_CONNECT_TIMEOUT_SECONDS in these tests
GRACE = 5  # the process must be gone within the deadline and this much


def critical_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " CRITICAL " in line]


class BlackHole:
    """A local socket that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.accepted_at: float | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.accepted_at is None:
            self.accepted_at = time.monotonic()
        self.accepted.set()

    async def __aenter__(self) -> BlackHole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def hole() -> AsyncIterator[BlackHole]:
    async with BlackHole() as server:
        yield server


def hole_env(hole: BlackHole, database: Path, **extra: str) -> dict[str, str]:
    """The bot with its REST calls going into the black hole."""

    class Unreachable:
        api_base_url = f"http://127.0.0.1:{hole.port}/api/v10"
        gateway_url = f"ws://127.0.0.1:{hole.port}/"

    return bot_env(Unreachable, database, **{"DISCORD_CONNECT_TIMEOUT_SECONDS": str(DEADLINE), **extra})


async def run_until_exit(process: asyncio.subprocess.Process) -> tuple[int, str]:
    try:
        return await finish(process, timeout=30)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("the bot did not exit within 30 s")


async def test_a_black_hole_at_login_is_one_line_and_exit_1_within_the_deadline(hole, tmp_path):
    process = await start_process(hole_env(hole, tmp_path / "data" / "pixverse.db"), tmp_path)
    code, stderr = await run_until_exit(process)
    exited = time.monotonic()
    assert code == 1, stderr
    assert hole.accepted_at is not None and exited - hole.accepted_at <= DEADLINE + GRACE, stderr
    assert critical_lines(stderr) == [line for line in stderr.splitlines() if line.endswith(
        f"CRITICAL bot: Could not start: Discord did not answer GET http://127.0.0.1:{hole.port}/api/v10/users/@me"
        f" within {DEADLINE} s (DISCORD_CONNECT_TIMEOUT_SECONDS)")], stderr
    assert len(critical_lines(stderr)) == 1
    assert "Traceback" not in stderr and " ERROR " not in stderr


async def test_sigterm_while_login_waits_on_discord_exits_0(hole, tmp_path):
    process = await start_process(hole_env(hole, tmp_path / "data" / "pixverse.db",
                                           DISCORD_CONNECT_TIMEOUT_SECONDS="60"), tmp_path)
    await asyncio.wait_for(hole.accepted.wait(), timeout=20)
    await asyncio.sleep(0.3)  # the request is sent and waits for its answer
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, stderr = await run_until_exit(process)
    assert code == 0, stderr
    assert time.monotonic() - signalled < GRACE
    assert "Shutting down (SIGTERM)" in stderr and "Stopped cleanly" in stderr
    assert "Traceback" not in stderr and not critical_lines(stderr) and " ERROR " not in stderr


async def test_a_black_hole_gateway_is_one_line_and_the_database_is_closed(fake, hole, tmp_path):
    database = tmp_path / "data" / "pixverse.db"
    # With SHARD_COUNT set, discord.py connects to DISCORD_GATEWAY_URL rather than /gateway/bot's URL.
    env = bot_env(fake, database, DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{hole.port}/", SHARD_COUNT="1",
                  DISCORD_CONNECT_TIMEOUT_SECONDS=str(DEADLINE))
    process = await start_process(env, tmp_path)
    code, stderr = await run_until_exit(process)
    exited = time.monotonic()
    assert code == 1, stderr
    assert hole.accepted_at is not None and exited - hole.accepted_at <= DEADLINE + GRACE
    lines = critical_lines(stderr)
    assert len(lines) == 1 and lines[0].endswith(
        f"CRITICAL bot: Could not start: Discord's gateway did not answer at ws://127.0.0.1:{hole.port}/"
        f" within {DEADLINE} s (DISCORD_CONNECT_TIMEOUT_SECONDS)"
    ), stderr
    assert "Traceback" not in stderr
    assert database.exists() and not database.with_name("pixverse.db-wal").exists()  # closed cleanly


async def test_a_gateway_that_never_sends_ready_is_one_line(fake, tmp_path):
    """The websocket opens, and then nothing: no HELLO, no READY."""

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/gateway", silent)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        env = bot_env(fake, tmp_path / "data" / "pixverse.db", DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/gateway",
                      SHARD_COUNT="1", DISCORD_CONNECT_TIMEOUT_SECONDS=str(DEADLINE))
        process = await start_process(env, tmp_path)
        code, stderr = await run_until_exit(process)
    finally:
        await runner.cleanup()
    assert code == 1, stderr
    lines = critical_lines(stderr)
    assert len(lines) == 1 and lines[0].endswith(
        f"CRITICAL bot: Could not start: Discord's gateway ws://127.0.0.1:{port}/gateway sent no READY"
        f" within {DEADLINE} s (DISCORD_CONNECT_TIMEOUT_SECONDS)"
    ), stderr
    assert "Traceback" not in stderr


async def test_sigterm_while_the_gateway_does_not_answer_exits_0_with_the_database_closed(fake, hole, tmp_path):
    database = tmp_path / "data" / "pixverse.db"
    env = bot_env(fake, database, DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{hole.port}/", SHARD_COUNT="1",
                  DISCORD_CONNECT_TIMEOUT_SECONDS="60")
    process = await start_process(env, tmp_path)
    await asyncio.wait_for(hole.accepted.wait(), timeout=20)
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    code, stderr = await run_until_exit(process)
    assert code == 0, stderr
    assert "Stopped cleanly" in stderr
    assert "Traceback" not in stderr and not critical_lines(stderr) and " ERROR " not in stderr
    assert database.exists() and not database.with_name("pixverse.db-wal").exists()


async def test_a_refused_connection_names_its_reason(tmp_path):
    """Nothing listens at all: the reason is aiohttp's, never empty."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    class Refusing:
        api_base_url = f"http://127.0.0.1:{port}/api/v10"
        gateway_url = f"ws://127.0.0.1:{port}/"

    process = await start_process(bot_env(Refusing, tmp_path / "db.sqlite"), tmp_path)
    code, stderr = await run_until_exit(process)
    assert code == 1
    lines = critical_lines(stderr)
    assert len(lines) == 1 and f"CRITICAL bot: Could not start: Cannot connect to host 127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in stderr


async def test_sigterm_while_the_database_opens_lets_it_finish_and_exits_0(fake, tmp_path):
    """SIGTERM while the Core opens the database (here: waiting on another process's lock, as a long
    migration would): the opening is not cut short; the bot stops when it ends, exit 0, no traceback."""
    import sqlite3

    from bot.store.sqlite import database as db

    database = tmp_path / "pixverse.db"
    opened = await db.Database.open(database)
    await opened.close()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        process = await start_process(bot_env(fake, database), tmp_path)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 20
        while not any(r.path == "/oauth2/applications/@me" for r in fake.requests) and loop.time() < give_up:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the bot is opening the database, held by the lock
        process.send_signal(signal.SIGTERM)
        code, stderr = await run_until_exit(process)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 0, stderr
    assert "Shutting down (SIGTERM)" in stderr and "Stopped cleanly" in stderr
    assert "Traceback" not in stderr and not critical_lines(stderr)
    assert not database.with_name("pixverse.db-wal").exists()
