"""HTTP API load: POST /v1/pixverse/account/<channel> and GET /v1/pixverse/account beside raw aiohttp.

    python bench/http_bench.py [--requests N] [--concurrency 200] [--rounds 3] [--quick] [--client auto|wrk|python|aiohttp]

Three processes, all on 127.0.0.1:

* the API server: the bot's own ``Core`` (bot/core.py), built by ``Core.open`` exactly as the
  bot builds it (database with its PRAGMAs and migrations, token key, account service, API
  tokens, dispatcher listening to account saves, never started; the bot's HTTP listener with
  its limits), with the bot's logging (redaction included) at INFO. The stand-ins: the token
  checker (``BenchTokenChecker``) answers a user id without asking Discord, the view of Discord
  (``BenchDiscord``) sees every channel, and the backend is the simulated one.
* the baseline server: a raw aiohttp hello-world (``GET /`` → ``Hello, World!``) on aiohttp's
  own ``AppRunner``, its own process.
* the load generator, a second process: ``wrk`` (Debian's package) when it is installed,
  else a Python client. Both keep ``--concurrency`` keep-alive connections open and one
  request in flight on each (a closed loop), and stop after a bounded number of requests.
  The Python client speaks HTTP/1.1 on raw asyncio transports: aiohttp's own client spends
  more CPU per request than the server under test, so on a 2-core machine it would measure
  itself (``--client aiohttp`` shows it).

With two or more CPUs the servers are pinned to CPU 0 and the load generator to CPU 1, so
they do not take each other's core (``--no-pin`` turns that off).

Scenarios, in ``--rounds`` interleaved rounds (default 3; each figure reported as the median of
the rounds', with every round's p99 beside it), each with its own warm-up, then a bounded number
of measured requests:

* ``hello``: GET / on the hello-world server (the raw aiohttp rate of this machine, now);
* ``get``: GET /v1/pixverse/account for a server with ``--accounts`` configured accounts.
  Nothing is written meanwhile, so after the first request the repository answers from its
  per-server list, kept while SQLite's ``data_version`` is unchanged;
* ``get-uncached``: the same on a second API server whose list cache is off, so every request
  reads the rows: what GET costs when something was committed since the previous one;
* ``job``: GET /v1/pixverse/jobs/?jobid= for one job, with 10,000 live jobs in the database
  (inserted in bulk) while the API server writes ``--live-writes`` progress UPDATEs a second
  (500 by default; on during this scenario only), as PixVerse's edits of running jobs do.
* open loop (``--open-loop-seconds``, 10 by default): after the rounds, ``post`` at 1,000
  requests/s and ``job`` at 2,000 requests/s, a fixed arrival rate whatever the server's pace,
  each latency from the request's scheduled time (the latency targets; a closed loop measures
  throughput).
* ``post``: POST /v1/pixverse/account/<channel>, every request a new channel of another
  server with its own token (rule 8: a token may be configured in one channel only), so
  every request is a real insert: validation, the duplicate lookups, the token check
  (stubbed), Fernet encryption, the upsert (group-committed with the other requests in
  flight), the dispatcher's look for waiting jobs;
* ``post-floor``: the same requests (same headers, same body) to a bench-only route of the
  same API server, ``POST /bench/post-floor/<channel>``, that does what every authenticated
  JSON POST of the app does before any account work (the middleware, the API token via
  ``guild_of``, the body via ``json_body``) and answers 204. It is the ceiling of ``post``
  on this machine: the difference between the two is the account work itself, and the
  report prints how many microseconds of it the target leaves room for.

Reported per scenario: requests/s, p50 and p99 latency (ms), the ratio of requests/s to the
hello-world rate, and PASS/FAIL for the issue's target, p99 under 20 ms at 200 concurrent
connections. In a closed loop the mean latency is connections / throughput (Little's law),
so that target needs more than 10,000 requests/s from the server at 200 connections.

The API servers call ``bot.discord_bot.freeze_startup_objects()`` after setup, as the bot does.

``--profile FILE`` runs the API server under cProfile and writes its stats there (the
measured rates then include the profiler's overhead); ``--scenarios post`` measures one.
``bench/http_breakdown.py`` times each step of the two routes alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import collections
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_P99_MS = 20.0
WRITE_GUILD = "910000000000000001"  # POSTs go here: thousands of accounts by the end
READ_GUILD = "910000000000000002"  # GET lists this one: --accounts accounts
WRITE_CHANNEL_BASE = 920_000_000_000_000_000
READ_CHANNEL_BASE = 930_000_000_000_000_000
MAX_PHASE_SECONDS = 180  # a phase that has not finished by then is stopped and reported as failed
# POST channel indices: the warm-up from 0, the measured run from here. wrk may send a few more
# than asked (requests in flight when it stops), so the two ranges must not touch.
MEASURED_FROM = 10_000_000
# Each round's POSTs start this far from the previous round's, so every round inserts.
ROUND_STRIDE = 100_000_000
POST_PATH = "/v1/pixverse/account"
POST_FLOOR_PATH = "/bench/post-floor"
POSTS = ("post", "post-floor", "post-normal")  # scenarios that send account bodies
SCENARIOS = ("hello", "get", "get-uncached", "job", "post-floor", "post", "post-normal")
LIVE_JOBS = 10_000  # the job scenario: live jobs in the database (issue 10's figure)
TARGET_JOB = "job:bench-target"
LIVE_WRITES_PATH = "/bench/live-writes"


# ------------------------------------------------------------------------------- servers


class BenchTokenChecker:
    """BENCH ONLY: stands in for Discord's ``GET /users/@me``, which the bot calls for every
    save. It answers at once, without network, a user id derived from the token (distinct per
    token, so rule "same discord account" never fires). The real checker is one HTTPS round
    trip to Discord per POST; this bench measures the bot, not Discord."""

    async def user_id(self, token: str) -> str:
        return str(700_000_000_000_000_000 + int(hashlib.sha256(token.encode()).hexdigest()[:15], 16) % 10**17)


def account_token(scenario: str, index: int) -> str:
    # Token-sized (a Discord user token is about 70 characters) and distinct per channel.
    return f"bench{scenario}.{index:012d}." + "x" * 48


def account_body(guild: str, channel: str, token: str) -> str:
    return json.dumps({"discord": token, "server": guild, "channel": channel, "maxJobs": 3})


def stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """The parent keeps our stdin open; when it closes (or the parent dies) the server stops."""

    def wait() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait, daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)


async def serve_api(args: argparse.Namespace) -> None:
    """The API server as the bot builds it: the same Core (bot/core.py), the bot's listener and
    limits; Discord's token check stubbed and a simulated backend, never started."""
    from aiohttp import web
    from cryptography.fernet import Fernet

    from bot.store.sqlite import accounts as repository_module
    from bot.core import Core
    from bot.discord_bot import freeze_startup_objects
    from bot.logs import register_secrets, setup_logging
    from bot.settings import Settings
    from bot.web.routes import guild_of, json_body

    if args.no_list_cache:
        repository_module.LIST_CACHE_SERVERS = 0  # the get-uncached scenario: every GET reads
    workdir = Path(args.dir)
    key = Fernet.generate_key().decode()
    log_file = open(workdir / "api-server.log", "a", encoding="utf-8")  # the bot logs to a stream, as it does to stderr
    setup_logging("INFO", stream=log_file, secrets=[key])

    async def post_floor(request: web.Request) -> web.Response:
        """BENCH ONLY: an authenticated JSON POST of the app with no account work: the route's ceiling."""
        await guild_of(request)
        await json_body(request)
        return web.Response(status=204)

    with socket.socket() as probe:  # a free port: the Core reads HTTP_PORT=0 as "API off"
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        _env_file=None, discord_token="bench-bot-token", database_path=workdir / "bench.db",
        token_encryption_key=key, pixverse_backend="simulated", pixverse_simulated_duration_seconds=1.0,
        http_host="127.0.0.1", http_port=port,
    )
    writes = asyncio.Event()

    async def live_writes(request: web.Request) -> web.Response:
        """BENCH ONLY: the orchestrator turns the progress writes on for the job scenario only,
        so that they take no CPU from the other scenarios' servers pinned to the same core."""
        writes.set() if request.query.get("on") == "1" else writes.clear()
        return web.Response(status=204)

    core = await Core.open(settings, BenchDiscord(), token_checker=BenchTokenChecker(),
                           extra_routes=[("POST", POST_FLOOR_PATH + "/{channel}", post_floor),
                                         ("POST", LIVE_WRITES_PATH, live_writes)])
    if args.synchronous_normal:
        # The post-normal scenario: what the bot's synchronous=FULL costs a POST.
        await core.db.execute("PRAGMA synchronous=NORMAL")
    write_token = await core.api_tokens.create(WRITE_GUILD, "bench")
    read_token = await core.api_tokens.create(READ_GUILD, "bench")
    register_secrets(write_token, read_token)  # as /pixverse-api-token does
    for index in range(args.accounts):
        channel = str(READ_CHANNEL_BASE + index)
        body = json.loads(account_body(READ_GUILD, channel, account_token("read", index)))
        await core.accounts.save(await core.accounts.prepare(body, path_channel=channel, guild_id=READ_GUILD))
    await add_live_jobs(core.db, core.dispatcher.owner)
    writer = asyncio.create_task(progress_writes(core.db, args.live_writes, writes)) if args.live_writes else None
    freeze_startup_objects()  # as the bot does at the end of setup_hook
    await serve(StartedCore(core), {"write_token": write_token, "read_token": read_token})
    if writer is not None:
        writer.cancel()
    log_file.close()


async def add_live_jobs(db, owner: str) -> None:
    """BENCH ONLY: LIVE_JOBS jobs holding a slot, inserted in bulk (the job scenario reads one of
    them, TARGET_JOB, on the read server's first account; the rest belong to 2,000 other servers).
    Owned by the server's own dispatcher: a lease under another name would make the store
    believe a second process writes to the file, and turn group commit off (Database)."""
    from bot.store.sqlite import bulk

    now = time.time()
    rows = [(TARGET_JOB, READ_GUILD, str(READ_CHANNEL_BASE), "700000000000000001")] + [
        (f"job:bench-live-{n}", str(950_000_000_000_000_000 + n % 2000), str(960_000_000_000_000_000 + n % 5000),
         "700000000000000002") for n in range(LIVE_JOBS - 1)]
    async def load(tx) -> None:
        await bulk.lease(tx, owner, now)
        await bulk.insert_jobs(tx, (
            dict(job_id=job_id, guild_id=guild, account_channel_id=channel, account_user_id=user, max_jobs=10,
                 requester_id="api", request_channel_id="api", params='{"prompt": "a fox"}', state="submitted",
                 status="progress", owner=owner, created_at=now, submitted_at=now, pixverse_open=1, progress=37)
            for job_id, guild, channel, user in rows))

    await db.run(load)


async def progress_writes(db, per_second: float, on: asyncio.Event) -> None:
    """BENCH ONLY: PixVerse's progress edits of the live jobs, as the bot records them: one
    UPDATE per edit, at a fixed rate, on the same database as the reads, while ``on`` is set."""
    n = 0
    interval = 1 / per_second
    next_at = time.perf_counter()
    while True:
        if not on.is_set():
            await on.wait()
            next_at = time.perf_counter()
        n += 1
        await db.execute("UPDATE jobs SET progress = ?, updated_at = ? WHERE job_id = ?",
                         (n % 100, time.time(), f"job:bench-live-{n % (LIVE_JOBS - 1)}"))
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


class BenchDiscord:
    """BENCH ONLY: the Core's view of Discord, with every channel visible and the gateway up."""

    async def channel_visible(self, guild_id: str, channel_id: str) -> bool:
        return True

    def gateway_problem(self) -> None:
        return None

    async def read_history(self, channel_id: str, after: int):
        return
        yield


class StartedCore:
    """A Core whose HTTP server is already listening, as serve() wants a server."""

    def __init__(self, core) -> None:
        self.core = core
        self.port = core.http.port

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.core.close()


async def serve_hello(args: argparse.Namespace) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    await serve(RawAiohttp(app), {})


class RawAiohttp:
    """aiohttp's own AppRunner + TCPSite, for the hello-world baseline."""

    def __init__(self, app) -> None:
        from aiohttp import web

        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = 0

    async def start(self) -> None:
        from aiohttp import web

        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve(server, extra: dict) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_on_stdin_eof(loop, stop)
    await server.start()
    print(json.dumps({"port": server.port, **extra}), flush=True)
    await stop.wait()
    await server.stop()


def run_server(args: argparse.Namespace) -> None:
    main = serve_api if args.role == "api-server" else serve_hello
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(main(args))
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        asyncio.run(main(args))


# ------------------------------------------------------------------------------- load


@dataclass
class Scenario:
    name: str
    label: str
    port: int
    method: str
    expected: int
    token: str = ""

    def request(self, index: int) -> bytes:
        host = f"127.0.0.1:{self.port}"
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        if self.name in POSTS:
            channel = str(WRITE_CHANNEL_BASE + index)
            body = account_body(WRITE_GUILD, channel, account_token("write", index)).encode()
            prefix = POST_FLOOR_PATH if self.name == "post-floor" else POST_PATH
            return (f"POST {prefix}/{channel} HTTP/1.1\r\nHost: {host}\r\n{auth}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        path = get_path(self.name)
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()


def get_path(scenario: str) -> str:
    return {"hello": "/", "job": f"/v1/pixverse/jobs/?jobid={TARGET_JOB}"}.get(scenario, "/v1/pixverse/account")


@dataclass
class Measured:
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # empty when the client gives percentiles
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    unexpected: dict[str, int] = field(default_factory=dict)  # status (or error) -> count
    client: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summarise(self) -> None:
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            self.p50_ms = percentile(ordered, 0.50)
            self.p99_ms = percentile(ordered, 0.99)
            self.max_ms = ordered[-1]
            self.latencies_ms = []


def percentile(ordered: list[float], q: float) -> float:
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class _Phase:
    """One bounded run of requests over the open connections; one request in flight per connection."""

    def __init__(self, requests: list[bytes], expected: int) -> None:
        self.requests = requests
        self.expected = expected
        self.next = 0
        self.completed = 0
        self.latencies_ns: list[int] = []
        self.unexpected: Counter[str] = Counter()
        self.finished = asyncio.get_running_loop().create_future()

    def take(self) -> bytes | None:
        if self.next >= len(self.requests):
            return None
        self.next += 1
        return self.requests[self.next - 1]

    def record(self, status: int, latency_ns: int) -> None:
        self.latencies_ns.append(latency_ns)
        if status != self.expected:
            self.unexpected[str(status)] += 1
        self.completed += 1
        if self.completed == len(self.requests) and not self.finished.done():
            self.finished.set_result(None)

    def fail(self, reason: str) -> None:
        if not self.finished.done():
            self.finished.set_exception(RuntimeError(reason))


class _Answers(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection that parses just enough of each answer: status and length.
    Subclasses say what an answer means (``answered``) and what a chunked one does (``unsupported``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1
        self.status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                self.status = int(head[9:12])
                if b"\r\ntransfer-encoding:" in head:
                    self.unsupported("chunked responses are not supported by this client")
                    return
                at = head.find(b"\r\ncontent-length:")
                line_end = head.find(b"\r\n", at + 2) if at >= 0 else -1
                length = int(head[at + 17:line_end if line_end >= 0 else len(head)]) if at >= 0 else 0
                self.need = end + 4 + length
            if len(self.buffer) < self.need:
                return
            del self.buffer[:self.need]
            self.need = -1
            self.answered(self.status)

    def answered(self, status: int) -> None:
        raise NotImplementedError

    def unsupported(self, reason: str) -> None:
        raise RuntimeError(reason)


class _Connection(_Answers):
    """The closed-loop client's connection: the next request as soon as an answer is in."""

    def __init__(self) -> None:
        super().__init__()
        self.phase: _Phase | None = None
        self.sent_ns = 0

    def start(self, phase: _Phase) -> None:
        self.phase = phase
        self._send()

    def _send(self) -> None:
        request = self.phase.take()
        if request is not None:
            self.sent_ns = time.perf_counter_ns()
            self.transport.write(request)

    def answered(self, status: int) -> None:
        self.phase.record(status, time.perf_counter_ns() - self.sent_ns)
        self._send()

    def unsupported(self, reason: str) -> None:
        self.phase.fail(reason)

    def connection_lost(self, exc) -> None:
        if self.phase is not None and self.phase.completed < len(self.phase.requests):
            self.phase.fail(f"connection lost: {exc}")


async def python_client(scenario: Scenario, warmup: int, count: int, concurrency: int, offset: int) -> Measured:
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(concurrency):  # one at a time: a burst of 200 connects can overflow the listen backlog
        _, protocol = await loop.create_connection(_Connection, "127.0.0.1", scenario.port)
        connections.append(protocol)
    result = Measured(client="python (asyncio transports)")
    for start, n, measured in ((offset, warmup, False), (offset + MEASURED_FROM, count, True)):
        phase = _Phase([scenario.request(start + i) for i in range(n)], scenario.expected)
        began = time.perf_counter()
        for connection in connections:
            connection.start(phase)
        await asyncio.wait_for(phase.finished, MAX_PHASE_SECONDS)
        if measured:
            result.seconds = time.perf_counter() - began
            result.requests = n
            result.latencies_ms = [ns / 1e6 for ns in phase.latencies_ns]
            result.unexpected = dict(phase.unexpected)
    for connection in connections:
        connection.transport.close()
    return result


async def aiohttp_client(scenario: Scenario, warmup: int, count: int, concurrency: int, offset: int) -> Measured:
    import aiohttp

    result = Measured(client="python (aiohttp ClientSession)")
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for start, n, measured in ((offset, warmup, False), (offset + MEASURED_FROM, count, True)):
            raw = [scenario.request(start + i) for i in range(n)]  # reuse the request builder, then split it
            index = 0
            latencies: list[float] = []
            unexpected: Counter[str] = Counter()

            async def worker() -> None:
                nonlocal index
                while index < n:
                    request = raw[index]
                    index += 1
                    head, _, body = request.partition(b"\r\n\r\n")
                    lines = head.decode().split("\r\n")
                    method, path, _ = lines[0].split(" ")
                    headers = dict(line.split(": ", 1) for line in lines[1:] if not line.startswith("Host:"))
                    sent = time.perf_counter()
                    async with session.request(method, f"http://127.0.0.1:{scenario.port}{path}", headers=headers,
                                               data=body or None) as response:
                        await response.read()
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if response.status != scenario.expected:
                        unexpected[str(response.status)] += 1

            began = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), MAX_PHASE_SECONDS)
            if measured:
                result.seconds = time.perf_counter() - began
                result.requests = n
                result.latencies_ms = latencies
                result.unexpected = dict(unexpected)
    return result


class _OneAtATime(_Answers):
    """An open-loop connection: sends the request it is given, reports the answer's end or its loss."""

    def __init__(self, done, lost) -> None:
        super().__init__()
        self.done = done  # callback(connection, status)
        self.lost = lost  # callback(connection)

    def send(self, request: bytes) -> None:
        self.transport.write(request)

    def answered(self, status: int) -> None:
        self.done(self, status)

    def connection_lost(self, exc) -> None:
        self.lost(self)


async def open_loop_client(scenario: Scenario, rate: float, seconds: float, warmup_seconds: float, offset: int,
                           pool: int = 256) -> Measured:
    """Requests at a fixed arrival rate, whatever the server's pace (open loop). Each latency runs from
    the request's scheduled time, so time spent waiting for a connection counts too (no
    coordinated omission): a server that falls behind shows it in p99 at once. Connections are
    opened as the load needs them, up to ``pool``, and replaced when the server closes one."""
    loop = asyncio.get_running_loop()
    idle: list[_OneAtATime] = []
    backlog: collections.deque[tuple[int, bytes, bool]] = collections.deque()
    latencies: list[float] = []
    unexpected: Counter[str] = Counter()
    in_flight: dict[_OneAtATime, tuple[int, bytes, bool]] = {}
    opened = 0
    total = int(rate * (warmup_seconds + seconds))
    warm = int(rate * warmup_seconds)
    finished = loop.create_future()
    answered = 0

    def settle() -> None:
        nonlocal answered
        answered += 1
        if answered == total and not finished.done():
            finished.set_result(None)

    def next_for(connection: _OneAtATime) -> None:
        if backlog:
            item = backlog.popleft()
            in_flight[connection] = item
            connection.send(item[1])
        else:
            idle.append(connection)

    def done(connection: _OneAtATime, status: int) -> None:
        scheduled_ns, _, measured = in_flight.pop(connection)
        if measured:
            latencies.append((time.perf_counter_ns() - scheduled_ns) / 1e6)
            if status != scenario.expected:
                unexpected[str(status)] += 1
        settle()
        next_for(connection)

    def lost(connection: _OneAtATime) -> None:
        nonlocal opened
        opened -= 1
        if connection in idle:
            idle.remove(connection)  # closed while idle (the server's idle or head timeout): replaced on demand
        item = in_flight.pop(connection, None)
        if item is not None:  # lost with a request on it: sent again on another connection
            backlog.appendleft(item)
            grow()

    async def connect() -> None:
        try:
            _, protocol = await loop.create_connection(lambda: _OneAtATime(done, lost), "127.0.0.1", scenario.port)
        except OSError:
            nonlocal opened
            opened -= 1
            return
        next_for(protocol)

    def grow() -> None:
        nonlocal opened
        if opened < pool:
            opened += 1
            loop.create_task(connect())

    requests = [scenario.request(offset + MEASURED_FROM + i) for i in range(total)]
    for _ in range(min(pool, 16)):  # a few ready; the rest as the load needs them
        grow()
    await asyncio.sleep(0.05)
    start_ns = time.perf_counter_ns()
    interval_ns = 1e9 / rate
    for i, request in enumerate(requests):
        scheduled_ns = int(start_ns + i * interval_ns)
        delay = (scheduled_ns - time.perf_counter_ns()) / 1e9
        if delay > 0.0005:
            await asyncio.sleep(delay)
        item = (scheduled_ns, request, i >= warm)
        if idle:
            connection = idle.pop()
            in_flight[connection] = item
            connection.send(request)
        else:
            backlog.append(item)
            grow()
    try:
        # Bounded: a server that cannot keep up is reported, not waited for forever.
        await asyncio.wait_for(finished, seconds + 10)
    except asyncio.TimeoutError:
        now_ns = time.perf_counter_ns()
        late = [(scheduled, measured) for scheduled, _, measured in [*in_flight.values(), *backlog]]
        # Each unanswered request counts at least as long as it has waited so far.
        latencies.extend((now_ns - scheduled) / 1e6 for scheduled, measured in late if measured)
        unexpected["unanswered"] += sum(1 for _, measured in late if measured)
    last_ns = time.perf_counter_ns()
    for connection in [*idle, *in_flight]:
        connection.transport.close()
    result = Measured(client=f"python open loop (up to {pool} connections)")
    result.requests = total - warm
    result.seconds = (last_ns - start_ns) / 1e9 * (total - warm) / total
    result.latencies_ms = latencies
    result.unexpected = dict(unexpected)
    return result


def run_load(args: argparse.Namespace) -> None:
    spec = json.loads(args.spec)
    scenario = Scenario(**spec["scenario"])
    if spec.get("rate"):
        result = asyncio.run(open_loop_client(scenario, spec["rate"], spec["seconds"], spec["warmup_seconds"],
                                              spec["offset"]))
        result.summarise()
        print(json.dumps(result.__dict__))
        return
    client = aiohttp_client if spec["client"] == "aiohttp" else python_client
    result = asyncio.run(client(scenario, spec["warmup"], spec["count"], spec["concurrency"], spec["offset"]))
    result.summarise()
    print(json.dumps(result.__dict__))


WRK_SCRIPT = r"""
-- Written by bench/http_bench.py: a bounded closed loop of {count} requests.
local kind, token, port, post_path = "{kind}", "{token}", "{port}", "{post_path}"
local first, count, expected = {first}, {count}, {expected}
local sent, received = 0, 0
unexpected = 0  -- any status but the expected one; global, so that done() can read it from the thread
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  local index = first + sent
  sent = sent + 1
  if post_path ~= "" then
    -- Lua numbers are doubles: the channel id is built as text.
    local channel = "{channel_prefix}" .. string.format("%015d", index)
    local body = '{{"discord": "benchwrite.' .. string.format("%012d", index) .. '.{pad}", "server": "{guild}", '
      .. '"channel": "' .. channel .. '", "maxJobs": 3}}'
    return wrk.format("POST", post_path .. "/" .. channel,
      {{["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}}, body)
  end
  local headers = {{}}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", "{path}", headers)
end

function response(status, headers, body)
  received = received + 1
  if status ~= expected then unexpected = unexpected + 1 end
  if received == count then
    -- wrk's main thread sleeps for the whole -d; SIGINT wakes it to print the summary. Sent from
    -- a background shell, because os.execute (system()) ignores SIGINT while it waits.
    wrk.thread:stop()
    os.execute("(sleep 0.01; kill -INT $PPID) >/dev/null 2>&1 &")
  end
end

function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("unexpected") end
  io.write(string.format('{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"status_errors": %d, "socket_errors": %d}}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, wrong,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk_run(scenario: Scenario, first: int, count: int, concurrency: int, pin: int | None, workdir: Path) -> dict:
    assert WRITE_CHANNEL_BASE % 10**15 == 0
    script = workdir / f"wrk-{scenario.name}-{first}.lua"
    script.write_text(WRK_SCRIPT.format(
        kind=scenario.name, token=scenario.token, port=scenario.port, first=first, count=count,
        expected=scenario.expected, channel_prefix=str(WRITE_CHANNEL_BASE // 10**15), pad="x" * 48,
        guild=WRITE_GUILD, path=get_path(scenario.name),
        post_path={"post": POST_PATH, "post-normal": POST_PATH, "post-floor": POST_FLOOR_PATH}.get(scenario.name, ""),
    ))
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{MAX_PHASE_SECONDS}s", "--timeout", "10s", "-s", str(script),
               f"http://127.0.0.1:{scenario.port}/"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=MAX_PHASE_SECONDS + 30,
                          preexec_fn=pinner(pin))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def wrk_client(scenario: Scenario, warmup: int, count: int, concurrency: int, pin: int | None,
               workdir: Path, offset: int) -> Measured:
    wrk_run(scenario, offset, warmup, concurrency, pin, workdir)
    out = wrk_run(scenario, offset + MEASURED_FROM, count, concurrency, pin, workdir)
    unexpected = {}
    if out["status_errors"]:
        unexpected[f"not {scenario.expected}"] = out["status_errors"]
    if out["socket_errors"]:
        unexpected["socket errors"] = out["socket_errors"]
    # wrk stops after the count; requests still in flight then may add a few to its total.
    return Measured(
        requests=out["requests"], seconds=out["duration_us"] / 1e6, p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000, max_ms=out["max_us"] / 1000, unexpected=unexpected,
        client=wrk_version() + " (1 thread)",
    )


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return " ".join(out.split()[:2]) if out else "wrk"


# ------------------------------------------------------------------------------- orchestration


def pinner(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(role: str, workdir: Path, args: argparse.Namespace, pin: int | None,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, dict]:
    command = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--dir", str(workdir),
               "--accounts", str(args.accounts), "--live-writes", str(args.live_writes), *extra]
    if args.profile and role == "api-server":
        command += ["--profile", str(Path(args.profile).resolve())]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=pinner(pin))
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError(f"the {role} did not start (see {workdir}/api-server.log)")
    return process, json.loads(line)


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


OPEN_LOOP_POST_RATE = 1_000  # requests/s: issue 10's fixed arrival rates
OPEN_LOOP_JOB_RATE = 2_000


def measure_open_loop(scenario: Scenario, rate: float, args: argparse.Namespace, pin: int | None,
                      offset: int) -> tuple[float, Measured]:
    spec = {"scenario": scenario.__dict__, "rate": rate, "seconds": args.open_loop_seconds,
            "warmup_seconds": min(2.0, args.open_loop_seconds / 2), "offset": offset}
    if scenario.name == "job" and args.live_writes:
        set_live_writes(scenario.port, True)
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--role", "load", "--spec", json.dumps(spec)],
                              capture_output=True, text=True, cwd=ROOT, preexec_fn=pinner(pin),
                              timeout=2 * MAX_PHASE_SECONDS + 60)
    finally:
        if scenario.name == "job" and args.live_writes:
            set_live_writes(scenario.port, False)
    if done.returncode != 0:
        raise RuntimeError(f"the open-loop load failed:\n{done.stderr[-3000:]}")
    return rate, Measured(**json.loads(done.stdout.splitlines()[-1]))


def report_open_loop(results: dict[str, tuple[float, Measured]], scenarios: dict[str, Scenario],
                     args: argparse.Namespace) -> None:
    print()
    print(f"Open loop: requests at a fixed arrival rate for {args.open_loop_seconds:g} s (after a warm-up), latency from"
          " each request's scheduled time (waiting for a connection counts):")
    header = f"{'scenario':<49} {'target/s':>8} {'done/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  p99<{TARGET_P99_MS:g}ms"
    print(header)
    print("-" * len(header))
    for name, (rate, m) in results.items():
        verdict = "PASS" if m.p99_ms < TARGET_P99_MS and not m.unexpected else "FAIL"
        extra = f"  unexpected: {m.unexpected}" if m.unexpected else ""
        print(f"{scenarios[name].label:<49} {rate:>8,.0f} {m.rate:>8,.0f} {m.p50_ms:>8.1f} {m.p99_ms:>8.1f}"
              f" {m.max_ms:>8.1f}  {verdict}{extra}")


def set_live_writes(port: int, on: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {LIVE_WRITES_PATH}?on={int(on)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def measure(scenario: Scenario, args: argparse.Namespace, client: str, pin: int | None, workdir: Path,
            round_index: int) -> Measured:
    if scenario.name == "job" and args.live_writes:
        set_live_writes(scenario.port, True)
        try:
            return measure_now(scenario, args, client, pin, workdir, round_index)
        finally:
            set_live_writes(scenario.port, False)
    return measure_now(scenario, args, client, pin, workdir, round_index)


def measure_now(scenario: Scenario, args: argparse.Namespace, client: str, pin: int | None, workdir: Path,
                round_index: int) -> Measured:
    offset = round_index * ROUND_STRIDE
    if client == "wrk":
        return wrk_client(scenario, args.warmup, args.requests, args.concurrency, pin, workdir, offset)
    spec = {"scenario": scenario.__dict__, "client": client, "warmup": args.warmup, "count": args.requests,
            "concurrency": args.concurrency, "offset": offset}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--role", "load", "--spec", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT, preexec_fn=pinner(pin),
                          timeout=2 * MAX_PHASE_SECONDS + 60)
    if done.returncode != 0:
        raise RuntimeError(f"the load process failed:\n{done.stderr[-3000:]}")
    return Measured(**json.loads(done.stdout.splitlines()[-1]))


def stored_accounts(port: int, token: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET /v1/pixverse/account HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    return len(json.loads(data.partition(b"\r\n\r\n")[2]))


def rerun_command(args: argparse.Namespace) -> str:
    parts = ["python", "bench/http_bench.py", "--requests", str(args.requests), "--warmup", str(args.warmup),
             "--concurrency", str(args.concurrency), "--rounds", str(args.rounds), "--accounts", str(args.accounts),
             "--live-writes", f"{args.live_writes:g}", "--open-loop-seconds", f"{args.open_loop_seconds:g}",
             "--client", args.client]
    if args.scenarios != ",".join(SCENARIOS):
        parts += ["--scenarios", args.scenarios]
    if not args.pin:
        parts.append("--no-pin")
    return shlex.join(parts)


def orchestrate(args: argparse.Namespace) -> int:
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    elif client == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk), or use --client python", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    pin = args.pin and len(cpus) >= 2
    server_cpu, load_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    wanted = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="http-bench-"))
    started = time.perf_counter()
    servers: list[subprocess.Popen] = []
    try:
        api, api_info = start_server("api-server", workdir, args, server_cpu)
        servers.append(api)

        def variant(scenario: str, folder: str, flag: str) -> dict:
            """A second API server, in its own folder, for the scenario that measures one setting."""
            if scenario not in wanted:
                return {}
            (workdir / folder).mkdir()
            process, info = start_server("api-server", workdir / folder, args, server_cpu, (flag,))
            servers.append(process)
            return info

        uncached_info = variant("get-uncached", "uncached", "--no-list-cache")
        normal_info = variant("post-normal", "normal", "--synchronous-normal")
        hello, hello_info = start_server("hello-server", workdir, args, server_cpu)
        servers.append(hello)
        scenarios = {
            "hello": Scenario("hello", "hello world (raw aiohttp)", hello_info["port"], "GET", 200),
            "get": Scenario("get", f"GET /v1/pixverse/account ({args.accounts} accounts)", api_info["port"], "GET",
                            200, token=api_info["read_token"]),
            "job": Scenario("job", f"GET /v1/pixverse/jobs/?jobid= ({LIVE_JOBS:,} live jobs)", api_info["port"], "GET",
                            200, token=api_info["read_token"]),
            "get-uncached": Scenario("get-uncached", f"GET /v1/pixverse/account ({args.accounts}), no list cache",
                                     uncached_info.get("port", 0), "GET", 200, token=uncached_info.get("read_token", "")),
            "post-floor": Scenario("post-floor", "POST floor: auth + JSON body, no account", api_info["port"],
                                   "POST", 204, token=api_info["write_token"]),
            "post": Scenario("post", "POST /v1/pixverse/account/<new channel>", api_info["port"], "POST", 204,
                             token=api_info["write_token"]),
            "post-normal": Scenario("post-normal", "the same POST, synchronous=NORMAL", normal_info.get("port", 0),
                                    "POST", 204, token=normal_info.get("write_token", "")),
        }
        print(f"HTTP API load on 127.0.0.1: {args.requests:,} measured requests per scenario after {args.warmup:,}"
              f" warm-up, {args.concurrency} keep-alive connections, one request in flight on each")
        placement = f"servers on CPU {server_cpu}, load on CPU {load_cpu}" if pin else "no CPU pinning"
        described = (wrk_version() + " (1 thread)" if client == "wrk"
                     else {"python": "python (asyncio transports)", "aiohttp": "python (aiohttp ClientSession)"}[client])
        print(f"client: {described}; {placement};"
              f" {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        # Rounds interleave the scenarios, so a slow spell of this shared machine hits all of
        # them alike; each figure is the median of the rounds'.
        rounds: dict[str, list[Measured]] = {name: [] for name in wanted}
        for round_index in range(args.rounds):
            for name in wanted:
                rounds[name].append(measure(scenarios[name], args, client, load_cpu, workdir, round_index))
        if "post" in rounds:
            stored = stored_accounts(api_info["port"], api_info["write_token"])
            expected = (args.warmup + args.requests) * args.rounds
            print(f"POST check: {stored:,} accounts stored in the write server (expected at least {expected:,})")
        open_loop = {}
        if args.open_loop_seconds > 0:
            for k, (name, rate) in enumerate((("post", OPEN_LOOP_POST_RATE), ("job", OPEN_LOOP_JOB_RATE))):
                if name in wanted:
                    open_loop[name] = measure_open_loop(scenarios[name], rate, args, load_cpu, (args.rounds + k) * ROUND_STRIDE)
    finally:
        for process in servers:
            stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)
    report(rounds, scenarios, args)
    if open_loop:
        report_open_loop(open_loop, scenarios, args)
    print(f"total {time.perf_counter() - started:.0f} s; rerun: {rerun_command(args)}")
    if args.profile:
        print(f"cProfile stats of the API server: {args.profile} (python -m pstats {args.profile})")
    failed = any(m.unexpected for measured in rounds.values() for m in measured)
    return 1 if failed else 0


def median_of_rounds(measured: list[Measured]) -> Measured:
    """Each figure the median of the rounds' own (a round's slow spell moves none of them far)."""

    def median(values: list[float]) -> float:
        return sorted(values)[(len(values) - 1) // 2]

    rate = median([m.rate for m in measured])
    return Measured(
        requests=measured[0].requests, seconds=measured[0].requests / rate if rate else 0.0,
        p50_ms=median([m.p50_ms for m in measured]), p99_ms=median([m.p99_ms for m in measured]),
        max_ms=median([m.max_ms for m in measured]), client=measured[0].client,
    )


def report(rounds: dict[str, list[Measured]], scenarios: dict[str, Scenario], args: argparse.Namespace) -> None:
    results = {name: median_of_rounds(measured) for name, measured in rounds.items()}
    base = results.get("hello")
    header = (f"{'scenario':<45} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'vs hello':>9}"
              f" {'p99 of each round':>22}  p99<{TARGET_P99_MS:g}ms")
    print()
    print(f"{args.rounds} rounds of {args.requests:,} requests per scenario; each figure the median of the rounds':")
    print(header)
    print("-" * len(header))
    for name, m in results.items():
        ratio = f"{m.rate / base.rate:.2f}x" if base and base.rate else "-"
        verdict = "PASS" if m.p99_ms < TARGET_P99_MS else "FAIL"
        unexpected = Counter()
        for each in rounds[name]:
            unexpected.update(each.unexpected)
        if unexpected:
            verdict += f" (unexpected answers: {dict(unexpected)})"
        if name == "hello":
            verdict += " (baseline)"
        each_p99 = " ".join(f"{each.p99_ms:.1f}" for each in rounds[name])
        print(f"{scenarios[name].label:<45} {m.rate:>8,.0f} {m.p50_ms:>8.1f} {m.p99_ms:>8.1f}"
              f" {m.max_ms:>8.1f} {ratio:>9} {each_p99:>22}  {verdict}")
    print()
    print(f"Closed loop: mean latency = connections / throughput, so p99 < {TARGET_P99_MS:g} ms at {args.concurrency}"
          f" connections needs more than {args.concurrency / TARGET_P99_MS * 1000:,.0f} requests/s.")
    floor, post = results.get("post-floor"), results.get("post")
    if floor and post and floor.rate and post.rate:
        # The server's core is saturated in a closed loop, so 1 / rate is its time per request.
        budget_us = TARGET_P99_MS * 1000 / args.concurrency
        floor_us, post_us = 1e6 / floor.rate, 1e6 / post.rate
        print(f"Server time per request (1 / rate): POST floor {floor_us:.0f} µs, POST {post_us:.0f} µs, so the"
              f" account work takes {post_us - floor_us:.0f} µs. The target needs under {budget_us:.0f} µs in all"
              f" (the mean latency, which p99 exceeds), which leaves the account work at most"
              f" {max(budget_us - floor_us, 0):.0f} µs.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=None, help="measured requests per scenario (default 20000; --quick 3000)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per scenario (default 2000; --quick 500)")
    parser.add_argument("--concurrency", type=int, default=200, help="connections, each with one request in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all scenarios, interleaved; the median is reported")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--accounts", type=int, default=5, help="accounts of the server that GET lists")
    parser.add_argument("--client", choices=["auto", "wrk", "python", "aiohttp"], default="auto",
                        help="load generator (auto: wrk when installed, else python)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--no-list-cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--synchronous-normal", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--open-loop-seconds", type=float, default=10,
                        help="seconds of each open-loop run (POST at 1,000/s, GET a job at 2,000/s); 0: none")
    parser.add_argument("--live-writes", type=float, default=500,
                        help="progress UPDATEs per second of the live jobs, in the API server, during every scenario")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and load to CPUs")
    parser.add_argument("--profile", default=None, help="run the API server under cProfile, stats to this file")
    # internal: the server and load processes
    parser.add_argument("--role", choices=["api-server", "hello-server", "load"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role in ("api-server", "hello-server"):
        run_server(args)
        return 0
    if args.role == "load":
        run_load(args)
        return 0
    if args.requests is None:
        args.requests = 3000 if args.quick else 20000
    if args.warmup is None:
        args.warmup = 500 if args.quick else 2000
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
