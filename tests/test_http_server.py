"""The HTTP server's limits and refusals, over raw sockets: every answer JSON, no connection held forever."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import logging

import pytest
from aiohttp import web

from bot.web.routes import ApiContext, create_app
from bot.web.server import HttpLimits, LimitedServer

GOOD_TOKEN = "good-api-token"
GUILD = "111111111111111111"


class _Tokens:
    async def guild_of(self, token: str):
        return GUILD if token == GOOD_TOKEN else None


class _Accounts:
    max_concurrent_jobs = 10


async def _healthy():
    return None


async def _visible(guild_id, channel_id):
    return True


@pytest.fixture
async def server():
    servers = []

    async def start(**limits) -> LimitedServer:
        context = ApiContext(accounts=_Accounts(), dispatcher=None, tokens=_Tokens(),
                             channel_visible=_visible, health_problem=_healthy,
                             request_timeout=limits.get("request_timeout", 10.0))
        running = LimitedServer(create_app(context), "127.0.0.1", 0, HttpLimits(**limits))
        await running.start()
        servers.append(running)
        return running

    yield start
    for running in servers:
        await running.stop()


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> tuple[int | None, dict[str, str], bytes]:
    """Sends ``data`` and reads one answer (until the server closes or the answer is whole)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_answer(reader, timeout=timeout)
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader, *, timeout: float = 5.0) -> tuple[int | None, dict[str, str], bytes]:
    raw = b""
    async with asyncio.timeout(timeout):
        while b"\r\n\r\n" not in raw:
            chunk = await reader.read(65536)
            if not chunk:
                break
            raw += chunk
        if not raw:
            return None, {}, b""
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = await reader.read(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def assert_json_error(answer, status: int, error: str) -> None:
    code, headers, body = answer
    assert code == status, (code, body)
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"error": error, "code": status}


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {GOOD_TOKEN}",
            f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


PARSER_REFUSALS = [
    ("header line over 8190 bytes", b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
     431, "The request line or a header field is too large"),
    ("too many headers", b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
     431, "Request header fields are too large (too many headers)"),
    ("request line over 8190 bytes", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
     431, "The request line or a header field is too large"),
    ("bad method", b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Malformed HTTP request: bad method"),
    ("bad version", b"GET /healthz HTTP/9\r\nHost: x\r\n\r\n", 400, "Malformed HTTP request"),
    ("Content-Length with Transfer-Encoding",
     b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400, "Malformed HTTP request"),
    ("a bad chunk size",
     b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-api-token\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     400, "Malformed HTTP request"),
    ("a chunk of the wrong length",
     b"POST /v1/pixverse/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-api-token\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n",
     400, "Malformed HTTP request"),
    ("Content-Encoding br", post("/v1/pixverse/create", b"{}", "Content-Encoding: br"),
     415, "Content-Encoding is not supported; send the body as identity, gzip or deflate"),
    ("Content-Encoding compress", post("/v1/pixverse/create", b"{}", "Content-Encoding: compress"),
     415, "Content-Encoding is not supported; send the body as identity, gzip or deflate"),
    ("gzip that is not gzip", post("/v1/pixverse/create", b'{"prompt": "x"}', "Content-Encoding: gzip"),
     400, "Request body does not decode as its Content-Encoding (gzip) says"),
    ("a gzip bomb (10 MB of zeros in 10 KB)",
     post("/v1/pixverse/create", gzip.compress(b"\0" * 10_000_000), "Content-Encoding: gzip"),
     413, "Request body is larger than 65536 bytes"),
    ("a body that is not UTF-8 JSON", post("/v1/pixverse/create", b"\xff\xfe{"), 400, "Request body is not valid JSON"),
]


@pytest.mark.parametrize(("case", "data", "status", "error"), PARSER_REFUSALS, ids=[c[0] for c in PARSER_REFUSALS])
async def test_malformed_requests_get_json_errors_and_one_debug_line(server, caplog, case, data, status, error):
    running = await server()
    with caplog.at_level(logging.DEBUG):
        assert_json_error(await exchange(running.port, data), status, error)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]


async def test_a_real_gzip_body_is_read(server):
    running = await server()
    answer = await exchange(running.port, post("/v1/pixverse/create", gzip.compress(b'{"prompt": "x"}'),
                                               "Content-Encoding: gzip"))
    # Past the body: the next check is that jobs are not available in this test app.
    assert_json_error(answer, 503, "Jobs are not available right now")


async def test_a_head_sent_too_slowly_is_cut_off_with_a_408(server):
    running = await server(request_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    answered = b""
    for n in range(40):  # slowloris: one header line every 0.1 s, for up to 4 s, until answered
        try:
            answered = await asyncio.wait_for(reader.read(65536), 0.1)
            break
        except asyncio.TimeoutError:
            writer.write(b"X-a: %d\r\n" % n)
    writer.close()
    head, _, body = answered.partition(b"\r\n\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in head.decode().split("\r\n")[1:])}
    answer = (int(head.split()[1]), headers, body)
    assert_json_error(answer, 408, "The request was not received in time")
    assert loop.time() - started < 2.0


async def test_a_silent_connection_is_closed(server):
    running = await server(request_timeout=0.3, keepalive_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    answer = await read_answer(reader, timeout=3)
    writer.close()
    assert_json_error(answer, 408, "The request was not received in time")
    assert running.open_connections == 0


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server):
    running = await server(request_timeout=5, keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_answer(reader)
    assert (status, json.loads(body)) == (200, {"status": "ok", "code": 200})
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # closed by the server, well before the request timeout
    writer.close()


async def test_a_slow_body_is_a_408(server):
    running = await server(request_timeout=0.3)
    data = post("/v1/pixverse/create", b'{"prompt": "' + b"x" * 80 + b'"}')
    answer = await exchange(running.port, data[:-40], timeout=3)
    assert_json_error(answer, 408, "The request was not received in time")


async def test_connections_beyond_the_cap_are_refused_at_once_and_the_cap_frees_up(server):
    running = await server(max_connections=3, request_timeout=30, keepalive_timeout=30)
    held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert running.open_connections == 3
    answer = await exchange(running.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=1)
    assert_json_error(answer, 503, "The server has too many open connections; try again in a moment")
    held.pop()[1].close()
    await asyncio.sleep(0.05)
    status, _, _ = await exchange(running.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    for _, writer in held:
        writer.close()


async def test_a_burst_of_connections_cannot_pass_the_cap(server):
    """asyncio accepts many sockets in one go: the cap holds for a burst, not only one by one."""
    running = await server(max_connections=3, request_timeout=30, keepalive_timeout=30)
    burst = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", running.port) for _ in range(40)))
    await asyncio.sleep(0.1)
    assert running.open_connections == 3
    refused = 0
    for reader, writer in burst:
        try:
            data = await asyncio.wait_for(reader.read(65536), 0.05)
        except asyncio.TimeoutError:
            continue
        refused += b" 503 " in data.split(b"\r\n", 1)[0]
    assert refused == 37
    for _, writer in burst:
        writer.close()
    await asyncio.sleep(0.1)
    assert running.open_connections == 0


async def test_an_unknown_expect_is_a_json_417_and_the_connection_stays_usable(server):
    running = await server(request_timeout=0.3, keepalive_timeout=5)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n")
    assert_json_error(await read_answer(reader), 417, "Expectation Failed")
    await asyncio.sleep(0.6)  # past the request timeout: nothing unasked for arrives
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_answer(reader)
    writer.close()
    assert (status, json.loads(body)) == (200, {"status": "ok", "code": 200})


async def test_a_client_gone_mid_body_is_one_debug_line(server, caplog):
    running = await server()
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(post("/v1/pixverse/create", b'{"prompt": "x", "style": "Anime"}')[:-20])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert running.open_connections == 0


def test_the_aiohttp_surface_this_server_relies_on_is_still_there():
    """An aiohttp upgrade that moves these fails here, with the name of what moved."""
    assert "handle_error" in vars(web.RequestHandler)
    assert "finish_response" in vars(web.RequestHandler)
    assert list(inspect.signature(web.RequestHandler.finish_response).parameters) == [
        "self", "request", "resp", "start_time"]
    params = inspect.signature(web.RequestHandler.handle_error).parameters
    assert list(params)[:5] == ["self", "request", "status", "exc", "message"]
    init = inspect.signature(web.RequestHandler.__init__).parameters
    for name in ("manager", "loop", "keepalive_timeout", "access_log", "lingering_time"):
        assert name in init, name
    assert isinstance(inspect.getattr_static(web.AppRunner, "server"), property)
    assert isinstance(inspect.getattr_static(web.BaseRequest, "protocol"), property)
