"""Attacks on the running bot's HTTP API from 127.0.0.1, as the hostile client of issue 9 made them.

The real bot (PixverseBot, its cogs, its HTTP server) against the fake Discord, with
``REPLY_URL_ALLOW_PRIVATE`` off, as a production bot runs. Each test adds its figures to the
table printed at the end of the run (tests/hostile/figures.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import string
import time

import aiohttp
import pytest

from bot.logs import redactor
from tests.e2e.conftest import CHANNEL_ID, GUILD_ID, make_settings, start_bot, stop_bot
from tests.e2e.test_http_api import api_token, free_port
from tests.hostile.figures import Row, record, rss_mb
from tests.test_http_server import PARSER_REFUSALS, read_answer
from tests.test_reply_addresses import LOOPBACK_SPELLINGS, hook_listener


@pytest.fixture
async def bot_api(tmp_path, fake, restore_discord_endpoints):
    port = free_port()
    bot, task = await start_bot(make_settings(tmp_path, fake, http_port=port, reply_url_allow_private=False), fake)
    token = await api_token(fake, GUILD_ID, CHANNEL_ID)
    try:
        yield f"http://127.0.0.1:{port}", port, token
    finally:
        await stop_bot(bot, task)


async def test_no_spelling_of_a_local_address_makes_the_bot_post_to_itself(bot_api):
    base, _, token = bot_api
    row = Row("SSRF: replyUrl spellings of local addresses")
    refused = 0
    async with hook_listener() as (listener, hits), \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for host in LOOPBACK_SPELLINGS:
            for path in ("/v1/pixverse/create", "/v1/pixverse/create_single"):
                url = f"http://{host}:{listener}/hook"
                body = {"prompt": "a fox", "style": "Anime", "replyUrl": url}
                async with session.post(base + path, json=body) as response:
                    row.requests += 1
                    answer = await response.json(content_type=None)
                    row.server_errors += response.status >= 500
                    if answer == {"error": f"Param replyUrl ({url}) points to a private or local address",
                                  "code": 400}:
                        refused += 1
    row.notes.append(f"{refused} of {row.requests} refused at submission; {len(hits)} reached the listener")
    record(row)
    assert refused == row.requests
    assert hits == []


async def test_a_flood_of_distinct_discord_values_grows_nothing(bot_api):
    """400 saves with random 500-character values took /healthz from 1.5 to 76 ms and the process
    to 445 MB, because each value was registered with the log redactor before validation."""
    base, _, token = bot_api
    rng = random.Random(9)
    row = Row("flood: 600 distinct 500-character discord values")
    healthz_before: list[float] = []
    healthz_during: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def healthz(into: list[float]) -> None:
            started = time.perf_counter()
            async with session.get(base + "/healthz") as response:
                assert response.status == 200
                await response.read()
            into.append((time.perf_counter() - started) * 1000)

        for _ in range(30):
            await healthz(healthz_before)
        secrets_before, rss_before = len(redactor), rss_mb()
        headers = {"Authorization": f"Bearer {token}"}
        for n in range(600):
            value = "".join(rng.choices(string.ascii_letters + string.digits + "._-", k=500))
            body = {"discord": value, "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 1}
            async with session.post(f"{base}/v1/pixverse/account/{CHANNEL_ID}", json=body, headers=headers) as response:
                row.requests += 1
                row.server_errors += response.status >= 500
                try:
                    answer = await response.json()
                except (aiohttp.ContentTypeError, json.JSONDecodeError):
                    row.not_json += 1
                    continue
                assert (answer["error"], answer["code"]) == ("Required param discord is not a valid Discord token", 400)
            if n % 20 == 0:
                await healthz(healthz_during)
    row.rss_growth_mb = rss_mb() - rss_before
    p50_before, p50_during = statistics.median(healthz_before), statistics.median(healthz_during)
    row.notes.append(f"/healthz p50 {p50_before:.2f} ms before, {p50_during:.2f} ms during (max {max(healthz_during):.2f});"
                     f" secrets registered: {secrets_before} before, {len(redactor)} after")
    record(row)
    assert len(redactor) == secrets_before
    assert row.server_errors == 0 and row.not_json == 0
    assert row.rss_growth_mb < 32
    # Noise allowance, not a speed target: the old redactor made it 50 times slower.
    assert p50_during < max(5 * p50_before, p50_before + 20)


# Beyond the parser refusals (tests/test_http_server.py): things that are not HTTP at all.
RAW_GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",  # a TLS ClientHello
    b"GET /healthz\r\n\r\n",  # HTTP/0.9-style
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n Folded: header\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/pixverse/jobs/?jobid=%ff%fe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n\r\n",
    b"\r\n\r\n\r\n\r\n",
    b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nContent-Encoding: zstd\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=\r\nContent-Length: 4\r\n\r\n--\r\n",
]


async def test_raw_socket_requests_are_all_answered_in_json(bot_api):
    base, port, _ = bot_api
    row = Row("raw sockets: malformed and non-HTTP requests")
    silent = 0
    attacks = [case[1] for case in PARSER_REFUSALS] + RAW_GARBAGE
    rng = random.Random(3)
    attacks += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))) + b"\r\n\r\n" for _ in range(40)]
    for data in attacks:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            await writer.drain()
            try:
                status, headers, body = await read_answer(reader, timeout=15)
            except (ConnectionError, asyncio.IncompleteReadError):
                status, headers, body = None, {}, b""
        finally:
            writer.close()
        row.requests += 1
        if status is None:
            silent += 1
            continue
        row.server_errors += status >= 500
        try:
            answer = json.loads(body)
            assert headers.get("content-type") == "application/json; charset=utf-8"
            assert answer["code"] == status and (status < 400 or isinstance(answer["error"], str))
        except (ValueError, KeyError, TypeError, AssertionError):
            row.not_json += 1
            row.notes.append(f"not JSON: {data[:60]!r} -> {status} {headers.get('content-type')} {body[:80]!r}")
    async with aiohttp.ClientSession() as session, session.get(base + "/healthz") as response:
        healthy = response.status
    row.notes.append(f"{silent} closed without an answer (the request never completed); /healthz then {healthy}")
    record(row)
    assert row.server_errors == 0 and row.not_json == 0
    assert healthy == 200


async def test_idle_and_slowloris_connections_are_shed(tmp_path, fake, restore_discord_endpoints):
    """2,000 silent connections were never closed and 1,500 slowloris ones all stayed: now each
    is cut at the request timeout, and past the cap a new connection is refused at once."""
    port = free_port()
    settings = make_settings(tmp_path, fake, http_port=port, http_request_timeout_seconds=1.0,
                             http_keepalive_timeout_seconds=5.0, http_max_connections=200)
    bot, task = await start_bot(settings, fake)
    row = Row("idle + slowloris: 250 connections, cap 200, 1 s timeout")
    loop = asyncio.get_running_loop()
    try:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(150)]
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
        row.requests = len(silent) + len(slow)
        started = loop.time()
        for _, writer in slow:
            writer.write(b"GET /healthz HTTP/1.1\r\n")

        async def outcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bool) -> int | None:
            async with asyncio.timeout(10):
                while True:
                    try:
                        data = await asyncio.wait_for(reader.read(65536), 0.2)
                    except asyncio.TimeoutError:
                        if drip:
                            writer.write(b"X-Drip: 1\r\n")
                        continue
                    if not data:
                        return None
                    head, _, body = data.partition(b"\r\n\r\n")
                    if json.loads(body)["code"] != int(head.split()[1]):
                        row.not_json += 1
                    return int(head.split()[1])

        statuses = await asyncio.gather(*(outcome(r, w, False) for r, w in silent),
                                        *(outcome(r, w, True) for r, w in slow))
        elapsed = loop.time() - started
        for _, writer in silent + slow:
            writer.close()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            healthy = response.status
    finally:
        await stop_bot(bot, task)
    refused, timed_out = statuses.count(503), statuses.count(408)
    row.notes.append(f"{refused} refused at once (503), {timed_out} cut at the timeout (408),"
                     f" all closed after {elapsed:.1f} s; /healthz then {healthy}")
    record(row)
    assert refused == 50 and timed_out == 200
    assert elapsed < 5
    assert healthy == 200 and row.not_json == 0
