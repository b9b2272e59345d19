"""``python -m bot healthcheck`` (the image's HEALTHCHECK) against a running and a stopped bot, and
the gateway reconnecting by itself once the bot has run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from tests.e2e.test_process_e2e import ROOT, bot_env, finish, start_process
from tests.net import free_port


async def healthcheck(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    """The health check as Docker runs it: only the HTTP settings, no DISCORD_TOKEN."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "healthcheck", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout.decode(), stderr.decode()


def http_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HTTP_", "DATABASE_", "TOKEN_"))}
    env.update(PYTHONPATH=str(ROOT), **settings)
    return env


async def until_healthy(env: dict[str, str], cwd: Path, timeout: float = 20) -> tuple[int, str, str]:
    """/healthz answers 503 until the gateway's servers are in: ask again until 200."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        result = await healthcheck(env, cwd)
        if result[0] == 0 or loop.time() > give_up:
            return result
        await asyncio.sleep(0.3)


async def test_healthcheck_of_a_running_then_a_stopped_bot(fake, tmp_path):
    port = free_port()
    process = await start_process(bot_env(fake, tmp_path / "data" / "pixverse.db", HTTP_PORT=str(port)), tmp_path)
    checker = tmp_path / "elsewhere"  # no .env there: the environment alone
    checker.mkdir()
    try:
        await fake.wait_for_identify(timeout=20)
        code, stdout, stderr = await until_healthy(http_env(HTTP_PORT=str(port)), checker)
        assert (code, stdout, stderr) == (0, f"healthy: GET http://127.0.0.1:{port}/healthz answered 200\n", "")
        # HTTP_HOST=0.0.0.0 (the image's): asked on the loopback.
        code, stdout, _ = await healthcheck(http_env(HTTP_PORT=str(port), HTTP_HOST="0.0.0.0"), checker)
        assert code == 0 and f"http://127.0.0.1:{port}/healthz" in stdout
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = await finish(process)
    assert code == 0, stderr
    code, stdout, stderr = await healthcheck(http_env(HTTP_PORT=str(port)), checker)
    assert code == 1 and stdout == ""
    assert stderr == (f"unhealthy: nothing listens at http://127.0.0.1:{port}/healthz (connection refused):"
                      " is the bot running?\n")


async def test_in_a_container_the_api_listens_on_the_container_port(fake, tmp_path):
    """HTTP_CONTAINER_PORT (the image's 8080): the bot and its health check use it whenever HTTP_PORT
    is not 0; HTTP_PORT is the host's port, which Docker publishes."""
    port = free_port()
    env = bot_env(fake, tmp_path / "data" / "pixverse.db", HTTP_PORT="9090", HTTP_CONTAINER_PORT=str(port))
    process = await start_process(env, tmp_path)
    try:
        await fake.wait_for_identify(timeout=20)
        code, stdout, _ = await until_healthy(http_env(HTTP_PORT="9090", HTTP_CONTAINER_PORT=str(port)), tmp_path)
        assert code == 0 and f"http://127.0.0.1:{port}/healthz" in stdout
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = await finish(process)
    assert code == 0, stderr
    assert f"HTTP API listening on http://127.0.0.1:{port}" in stderr


async def test_healthcheck_names_a_503_and_its_reason_and_a_silent_server(tmp_path):
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"status": "unavailable", "error": "not connected to the Discord gateway",
                                  "code": 503}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", unavailable)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        code, stdout, stderr = await healthcheck(http_env(HTTP_PORT=str(port)), tmp_path)
    finally:
        await runner.cleanup()
    assert (code, stdout) == (1, "")
    assert stderr == f"unhealthy: GET http://127.0.0.1:{port}/healthz answered 503: not connected to the Discord gateway\n"

    async def silent(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code, stdout, stderr = await healthcheck(http_env(HTTP_PORT=str(port)), tmp_path, "--timeout", "1")
    finally:
        server.close()
    assert (code, stderr) == (1, f"unhealthy: GET http://127.0.0.1:{port}/healthz did not answer within 1 s\n")


async def test_healthcheck_with_the_api_off_passes_and_says_so(tmp_path):
    # A bad DATABASE_URL and no DISCORD_TOKEN: the health check reads the HTTP settings alone.
    (tmp_path / ".env").write_text("HTTP_PORT=0\nDATABASE_URL=mysql://nope\n")
    code, stdout, stderr = await healthcheck(http_env(), tmp_path)
    assert (code, stderr) == (0, "")
    assert stdout == ("healthy as far as can be told: the HTTP API is off (HTTP_PORT=0), so /healthz cannot"
                      " be asked\n")


async def test_healthcheck_with_a_bad_port_is_one_line(tmp_path):
    code, stdout, stderr = await healthcheck(http_env(HTTP_PORT="eighty"), tmp_path)
    assert code == 1 and stdout == ""
    assert stderr.startswith("unhealthy: Configuration error: HTTP_PORT: ") and stderr.count("\n") == 1


async def test_the_gateway_reconnects_by_itself_once_the_bot_has_run(fake, tmp_path):
    """Past the first READY the startup deadline is over: a dropped gateway is discord.py's to
    reconnect, however long that takes, and never a reason to exit."""
    env = bot_env(fake, tmp_path / "data" / "pixverse.db", DISCORD_CONNECT_TIMEOUT_SECONDS="1")
    process = await start_process(env, tmp_path)
    try:
        await fake.wait_for_identify(timeout=20)
        connections = fake.gateway_connections
        await fake._close_gateway_connections()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 20
        while fake.gateway_connections == connections and loop.time() < give_up:
            await asyncio.sleep(0.1)
        assert fake.gateway_connections > connections
        await asyncio.sleep(2.5)  # more than the startup deadline
        assert process.returncode is None
    finally:
        process.send_signal(signal.SIGTERM)
    code, stderr = await finish(process)
    assert code == 0, stderr
    assert " CRITICAL " not in stderr
