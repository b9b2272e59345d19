"""The bot in many servers beside a bare ``discord.Client``: CPU per gateway event, memory, start to ready.

    python bench/gateway_bench.py            # the issue's scale: 5,000 servers, bursts of 2,000 and 20,000
    python bench/gateway_bench.py --quick    # about 2 minutes: 1,000 servers, smaller floods (about 4.5 in full)
    python bench/gateway_bench.py [--servers 5000] [--small 100] [--events 5000] [--bursts 2000,20000] [--rounds 3]
    python bench/gateway_bench.py --start-only --rounds 9   # start to ready and idle RSS alone, more rounds
    python bench/gateway_bench.py --start-only --sharded    # the same, connected as Discord has such a bot connect

Two clients, each against its own fake Discord (tests/e2e/fake: REST and gateway, served by this
process on 127.0.0.1), with the same servers, intents and events:

* **this bot**: ``python -m bot`` as a process, exactly as deployed (its settings from the
  environment, SQLite, the HTTP API on a free port, logging at INFO; its modules' bytecode compiled
  first, as ``pip install`` and the image have it, so that neither client compiles sources at
  start), with a database made here:
  an account in every ``ACCOUNT_EVERY``-th server's second channel, and ``FOLLOWED_JOBS`` jobs
  running on ``FOLLOWED_CHANNELS`` of those accounts, each with its PixVerse message already
  attributed (the bot takes them over at startup, as after a restart);
* **the bare client**: a ``discord.Client`` with the bot's intents (guilds, guild messages,
  message content) and discord.py's defaults otherwise, doing nothing but connecting
  (``bench/bare_client.py``, a process of its own).

Every server has two text channels. The fake answers IDENTIFY with READY and a GUILD_CREATE per
server; ready is the client's ``on_ready`` (the bot's "Connected as" log line), both with
discord.py's default ``guild_ready_timeout`` (2 s).

Measured, in ``--rounds`` interleaved rounds (each figure the median of the rounds'):

* **CPU per event** for a flood of each kind of the issue's table (``--events`` each; the
  followed progress edits as bursts of each size of ``--bursts``), sent as fast as the client
  takes them: the client process's CPU time from ``/proc/<pid>/task/*/schedstat`` (all its
  threads, nanoseconds) from the first frame until the client has answered a heartbeat request
  sent after the last one and its CPU has gone quiet (for the followed bursts, at least
  ``PACE_SECONDS`` after it, so the status-message writes the burst causes are counted),
  less its idle CPU over the same time, divided by the events;
* **RSS** (``VmRSS`` of ``/proc/<pid>/status``): idle after ready at ``--small`` and
  ``--servers`` servers, and the bot's peak during the largest burst (sampled every 20 ms) over
  its RSS just before it. Idle, also its private part (``RssAnon``), not a target: the rest is
  shared libraries' pages read from disk, which the processes of one machine share. At ``--small``
  also split by mapping (``/proc/<pid>/smaps``): anonymous memory, and each shared library that
  makes half a MiB of difference;
* **start to ready** at ``--servers`` servers: from starting the process to its ready line, the
  two clients one after the other in each round; the verdict is on the median of the rounds'
  bot ÷ bare ratios, which cancels the machine's slow and fast spells. Split (not a target) at the
  client's first IDENTIFY as the fake receives it: before it, the client alone (imports, settings;
  for the bot also its database, HTTP API and command check); after it, the gateway's servers. By
  default each client has one gateway connection for every server. With ``--sharded`` (with ``--start-only``) both
  connect as Discord has a bot of that size connect: ``GET /gateway/bot`` recommends one shard
  per ``SERVERS_PER_SHARD`` servers (Discord requires shards past 2,500 servers and recommends
  about one per 1,000), the bare client is a ``discord.AutoShardedClient``, and discord.py waits
  its 5 s between two IDENTIFYs (``Client.before_identify_hook``), as against Discord;
* **database round trips** of a followed progress edit, counted in this process on the bot's own
  backend, dispatcher and SQLite store (worker-thread statements, and reads answered on the
  loop's thread);
* after each followed burst, that every followed job shows in the database the progress of its
  message's last edit (nothing lost to the bounded queue).

The measured clients run on CPU 0 and this process (the fakes, the load) on CPU 1 when the
machine has two CPUs. Targets (issue 15): ignored events ≤ 0.5× the bare client's CPU; a
followed event ≤ 2×, ≤ 1.2× from the smallest to the largest burst, one database round trip;
idle RSS ≤ bare + 15 MiB; RSS through the largest burst ≤ idle + 20 MiB; start to ready ≤ 1.1×.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import math
import os
import signal
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BOT_TOKEN = "gateway-bench-bot-token"
PIXVERSE_ID = 960000000000000001
OTHER_BOT_ID = 960000000000000002
MEMBER_IDS = [970000000000000000 + n for n in range(50)]
GUILD_BASE = 700000000000000000
ACCOUNT_EVERY = 5  # an account in every fifth server
SERVERS_PER_SHARD = 1000  # --sharded: Discord's recommendation, about one shard per 1,000 servers
FOLLOWED_CHANNELS = 50
JOBS_PER_CHANNEL = 2
FOLLOWED_JOBS = FOLLOWED_CHANNELS * JOBS_PER_CHANNEL
PACE_SECONDS = 3.5  # the dispatcher tells a job's progress at most every 3 s: its last notice falls in
QUIET_NS = 1_000_000  # CPU per 50 ms poll under which a client counts as quiet (2%)
QUIET_SECONDS = 0.3
PROMPT = "a lighthouse in a storm at night, waves crashing"
MEMBER_TEXT = "did anyone try the new map yet? we are doing a run tonight at 9, bring snacks and good vibes"

def guild_id(n: int) -> int:
    # A millisecond apart, as Discord's ids of servers made one after the other: spread over the
    # shards ((id >> 22) % shards) as Discord spreads them, one channel after the other in each.
    return GUILD_BASE + (n << 22)


def general_channel(n: int) -> int:
    return guild_id(n) + 1


def account_channel(n: int) -> int:
    return guild_id(n) + 2


def account_user(n: int) -> int:
    return 850000000000000000 + n


# --- /proc -------------------------------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of the process, in nanoseconds (schedstat's first field)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


ANONYMOUS = "anonymous: Python's objects and modules, the C heap"


def rss_by_mapping(pid: int) -> Counter[str]:
    """KiB of RSS per mapping of ``/proc/<pid>/smaps``: each file by its path below site-packages or
    the system's library folder (a shared library's pages), every anonymous mapping as ``ANONYMOUS``."""
    by: Counter[str] = Counter()
    name = ANONYMOUS
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts[0].endswith(":"):  # a mapping's header: range, perms, offset, dev, inode[, path]
                path = parts[5] if len(parts) > 5 and parts[5].startswith("/") else ""
                name = path.split("site-packages/")[-1].split("lib-dynload/")[-1] if path else ANONYMOUS
            elif parts[0] == "Rss:":
                by[name] += int(parts[1])
    return by


def shards_for(servers: int) -> int:
    """The shard count ``GET /gateway/bot`` recommends for so many servers under ``--sharded``."""
    return max(1, math.ceil(servers / SERVERS_PER_SHARD))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the world: servers, accounts, jobs ---------------------------------------------------------


@dataclass
class Followed:
    job_id: str
    guild: int
    channel: int
    user: int
    message_id: str
    interaction_id: str


@dataclass
class World:
    servers: int
    fakes: dict[str, Any] = field(default_factory=dict)  # "bot" / "bare" -> FakeDiscord
    followed: list[Followed] = field(default_factory=list)
    database: Path | None = None
    key: str = ""

    @property
    def account_servers(self) -> list[int]:
        return [n for n in range(self.servers) if n % ACCOUNT_EVERY == 0]


async def make_fake(world: World, *, sharded: bool):
    from tests.e2e.fake import FakeDiscord

    fake = FakeDiscord(bot_token=BOT_TOKEN)
    if sharded:
        fake.shard_count = shards_for(world.servers)
    fake.heartbeat_interval_ms = 3_600_000  # no periodic heartbeat: an op 1 answer is always ours
    fake.BACKLOG_LIMIT = 10
    fake.add_pixverse(application_id=PIXVERSE_ID)
    for n in range(world.servers):
        fake.add_guild(guild_id(n), name=f"Server {n}", channel_ids=[general_channel(n), account_channel(n)])
    for member in MEMBER_IDS:
        fake.add_user_token(f"member-{member}", user_id=member, username=f"member{member % 1000}")
    await fake.start()
    return fake


async def make_database(world: World, directory: Path) -> None:
    """The bot's database: its accounts and the followed jobs, each with its attributed message."""
    from cryptography.fernet import Fernet

    from bot.accounts.crypto import TokenCipher
    from bot.store.sqlite import bulk
    from bot.store.sqlite.accounts import AccountRepository
    from bot.store.sqlite.database import Database

    world.key = Fernet.generate_key().decode()
    world.database = directory / "bot.db"
    db = await Database.open(world.database)
    accounts = AccountRepository(db, TokenCipher(world.key))
    servers = world.account_servers
    for start in range(0, len(servers), 200):
        await asyncio.gather(*(accounts.upsert(
            guild_id=str(guild_id(n)), channel_id=str(account_channel(n)), token=f"account-token-{n:06d}-abcdefgh",
            discord_user_id=str(account_user(n)), max_jobs=3) for n in servers[start:start + 200]))
    now = time.time()
    rows, messages = [], []
    for index in range(min(FOLLOWED_JOBS, len(servers) * JOBS_PER_CHANNEL)):
        n = servers[index // JOBS_PER_CHANNEL]
        job = Followed(job_id=f"job:bench{index:05d}", guild=guild_id(n), channel=account_channel(n),
                       user=account_user(n), message_id=str(990000000000000000 + index),
                       interaction_id=str(980000000000000000 + index))
        world.followed.append(job)
        rows.append(dict(job_id=job.job_id, guild_id=str(job.guild), state="submitted", status="progress",
                         account_channel_id=str(job.channel), account_user_id=str(job.user), max_jobs=3,
                         requester_id=str(MEMBER_IDS[0]), request_channel_id=str(general_channel(n)),
                         params=json.dumps({"prompt": f"{PROMPT} {index}", "style": "Realistic"}),
                         created_at=now, submitted_at=now, pixverse_open=1, message_id=job.message_id, progress=1))
        messages.append((job.message_id, job.job_id))

    async def load(tx) -> None:
        await bulk.insert_jobs(tx, rows)
        await tx.executemany("INSERT INTO pixverse_messages (message_id, job_id) VALUES (?, ?)", messages)

    await db.run(load)
    await db.close()


# --- gateway payloads ----------------------------------------------------------------------------


def _iso(at: float | None = None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(at if at is not None else time.time(), dt.timezone.utc).isoformat()


MEMBER = {"roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "premium_since": None, "nick": None, "avatar": None,
          "banner": None, "deaf": False, "mute": False, "pending": False, "flags": 0,
          "communication_disabled_until": None}


def user(user_id: int, name: str, *, bot: bool = False) -> dict:
    payload = {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
               "public_flags": 0}
    if bot:
        payload["bot"] = True
    return payload


class Payloads:
    """The ``d`` of each kind of event, as Discord sends them to a bot with the message content intent."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.next_id = 1_000_000_000_000_000_000 + int(time.time() * 1000) % 10**9 * 1000

    def _id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def _message(self, channel: int, guild: int, author: dict, content: str, *, edited: bool = False,
                 message_id: str | None = None, **extra: Any) -> dict:
        msg = {
            "id": message_id or self._id(), "type": 0, "channel_id": str(channel), "author": author,
            "content": content, "timestamp": _iso(), "edited_timestamp": _iso() if edited else None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "components": [], "pinned": False, "flags": 0, "guild_id": str(guild), "member": MEMBER,
        }
        msg.update(extra)
        return msg

    def _server(self, i: int) -> int:
        return (i * 7919) % self.world.servers

    def member_create(self, i: int) -> dict:
        n = self._server(i)
        member = MEMBER_IDS[i % len(MEMBER_IDS)]
        return self._message(general_channel(n), guild_id(n), user(member, f"member{member % 1000}"),
                             f"{MEMBER_TEXT} #{i}", nonce=str(i))

    def member_update(self, i: int) -> dict:
        n = self._server(i)
        member = MEMBER_IDS[i % len(MEMBER_IDS)]
        return self._message(general_channel(n), guild_id(n), user(member, f"member{member % 1000}"),
                             f"{MEMBER_TEXT} #{i} (edited)", edited=True)

    def other_bot_create(self, i: int) -> dict:
        n = self._server(i)
        return self._message(general_channel(n), guild_id(n), user(OTHER_BOT_ID, "OtherBot", bot=True),
                             f"Now playing: track {i} of the server's playlist, requested by a member",
                             embeds=[{"type": "rich", "title": f"Track {i}", "description": "3:41 · 128 kbps"}])

    def _pixverse(self, channel: int, guild: int, account: int, prompt: str, percent: int, *, message_id: str,
                  interaction_id: str) -> dict:
        content = f"<@{account}> (prompt: {prompt} style: Realistic aspect-ratio: 16:9) ({percent}%)"
        app = str(PIXVERSE_ID)
        return self._message(
            channel, guild, user(PIXVERSE_ID, "PixVerse", bot=True), content, edited=True, message_id=message_id,
            type=20, mentions=[user(account, "account")], application_id=app, webhook_id=app,
            interaction_metadata={"id": interaction_id, "type": 2, "user": user(account, "account"),
                                  "authorizing_integration_owners": {"0": str(guild)}, "name": "create",
                                  "command_type": 1},
            interaction={"id": interaction_id, "type": 2, "name": "create", "user": user(account, "account")},
        )

    def pixverse_elsewhere(self, i: int) -> dict:
        """PixVerse's progress edit in a channel that is no account's (a member using PixVerse there)."""
        n = self._server(i)
        member = MEMBER_IDS[i % len(MEMBER_IDS)]
        return self._pixverse(general_channel(n), guild_id(n), member, PROMPT, 1 + i % 99, message_id=self._id(),
                              interaction_id=self._id())

    def followed(self, i: int, burst: int) -> dict:
        """Edit i of a burst: the followed jobs' messages in turn, each one's progress rising."""
        job = self.world.followed[i % FOLLOWED_JOBS]
        return self._pixverse(job.channel, job.guild, job.user, f"{PROMPT} {i % FOLLOWED_JOBS}",
                              progress_of(i, burst), message_id=job.message_id, interaction_id=job.interaction_id)


def progress_of(i: int, burst: int) -> int:
    rounds = max(1, burst // FOLLOWED_JOBS)
    return 1 + (i // FOLLOWED_JOBS) * 98 // rounds


KINDS = {
    "member_create": ("member's MESSAGE_CREATE", "MESSAGE_CREATE", Payloads.member_create),
    "member_update": ("member's MESSAGE_UPDATE", "MESSAGE_UPDATE", Payloads.member_update),
    "other_bot": ("another bot's MESSAGE_CREATE", "MESSAGE_CREATE", Payloads.other_bot_create),
    "pixverse_elsewhere": ("PixVerse message outside an account channel", "MESSAGE_UPDATE", Payloads.pixverse_elsewhere),
}


# --- the clients ----------------------------------------------------------------------------------


@dataclass
class Client:
    name: str  # "bot" / "bare"
    fake: Any
    process: asyncio.subprocess.Process
    started: float
    ready_at: float | None = None
    lines: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    idle_ns_per_s: float = 0.0
    idle_rss_kib: int = 0  # before any flood

    @property
    def pid(self) -> int:
        return self.process.pid

    def session(self):
        live = [s for s in self.fake._sessions.values() if s.conn is not None]
        if not live:
            raise RuntimeError(f"{self.name}: no live gateway session")
        return live[-1]


async def _read_lines(client: Client, stream: asyncio.StreamReader, marker: str) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        client.lines.append(text)
        del client.lines[:-200]
        if marker in text and not client.ready.is_set():
            client.ready_at = time.perf_counter()
            client.ready.set()


def _pin(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


async def start_client(name: str, world: World, directory: Path, cpu: int | None) -> Client:
    fake = world.fakes[name]
    if name == "bot":
        settings = ("DISCORD_", "PIXVERSE_", "TOKEN_", "DATABASE_", "LOG_", "HTTP_", "METRICS_", "SHARD_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(settings)}
        env.update(PYTHONPATH=str(ROOT), DISCORD_TOKEN=BOT_TOKEN, DATABASE_PATH=str(world.database),
                   TOKEN_ENCRYPTION_KEY=world.key, DISCORD_API_BASE_URL=fake.api_base_url,
                   DISCORD_GATEWAY_URL=fake.gateway_url, PIXVERSE_APPLICATION_ID=str(PIXVERSE_ID),
                   LOG_LEVEL="INFO", HTTP_PORT=str(free_port()))
        argv, marker = [sys.executable, "-m", "bot"], "Connected as"
    else:
        env = dict(os.environ, BENCH_API=fake.api_base_url, BENCH_GATEWAY=fake.gateway_url, BENCH_TOKEN=BOT_TOKEN,
                   BENCH_SHARDED="1" if fake.shard_count > 1 else "")
        argv, marker = [sys.executable, str(Path(__file__).resolve().parent / "bare_client.py")], "READY"
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=directory, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_pin(cpu))
    client = Client(name, fake, process, started)
    client.readers = [asyncio.create_task(_read_lines(client, stream, marker))  # type: ignore[attr-defined]
                      for stream in (process.stdout, process.stderr)]
    try:
        await asyncio.wait_for(client.ready.wait(), timeout=180)
    except TimeoutError:
        await stop_client(client)
        raise RuntimeError(f"{name} did not become ready; its last lines:\n" + "\n".join(client.lines[-30:])) from None
    return client


async def stop_client(client: Client) -> None:
    if client.process.returncode is None:
        client.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(client.process.wait(), timeout=30)
        except TimeoutError:
            client.process.kill()
            await client.process.wait()
    for task in getattr(client, "readers", []):
        task.cancel()


async def settle(client: Client, *, at_least: float = 0.0, limit: float = 120.0) -> None:
    """Until the client's CPU has been quiet (under 2% of a CPU) for QUIET_SECONDS, and ``at_least`` seconds passed."""
    began = quiet_since = time.perf_counter()
    last = cpu_ns(client.pid)
    while time.perf_counter() - began < limit:
        await asyncio.sleep(0.05)
        now_ns, now = cpu_ns(client.pid), time.perf_counter()
        if now_ns - last > QUIET_NS:
            quiet_since = now
        last = now_ns
        if now - quiet_since >= QUIET_SECONDS and now - began >= at_least:
            return


async def measure_idle(client: Client, seconds: float = 2.0) -> None:
    await settle(client)
    before, t0 = cpu_ns(client.pid), time.perf_counter()
    await asyncio.sleep(seconds)
    client.idle_ns_per_s = (cpu_ns(client.pid) - before) / (time.perf_counter() - t0)
    client.idle_rss_kib = rss_kib(client.pid)


async def heartbeat_answered(client: Client, session) -> None:
    """Asks for a heartbeat (op 1) and waits for the answer: every frame before it has been parsed."""
    fake = client.fake
    seen = len(fake.gateway_received)
    await session.conn.send('{"op": 1, "d": null}')
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        if any(frame.get("op") == 1 for frame in fake.gateway_received[seen:]):
            return
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{client.name} did not answer the heartbeat request")


@dataclass
class Flood:
    ns_per_event: float
    seconds: float
    peak_rss_growth_kib: int  # the peak during the flood over the client's idle RSS before any flood


async def flood(client: Client, event: str, payloads: list[str], *, pace: float = 0.0) -> Flood:
    """Sends the frames as fast as the client takes them; its CPU until it is done, per event."""
    session = client.session()
    conn = session.conn
    frames = []
    for d in payloads:
        session.seq += 1
        frames.append(f'{{"op": 0, "t": "{event}", "s": {session.seq}, "d": {d}}}')
    rss_before = rss_kib(client.pid)
    peak = rss_before
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_kib(client.pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    before, t0 = cpu_ns(client.pid), time.perf_counter()
    ws = conn.ws
    async with conn.lock:
        for frame in frames:
            await ws.send_str(frame)
    await heartbeat_answered(client, session)
    await settle(client, at_least=pace)
    elapsed = time.perf_counter() - t0
    used = cpu_ns(client.pid) - before - client.idle_ns_per_s * elapsed
    sampling = False
    await sampler
    return Flood(max(used, 0.0) / len(payloads), elapsed, peak - (client.idle_rss_kib or rss_before))


def check_followed(world: World, burst: int) -> tuple[int, int]:
    """Jobs whose stored progress is their message's last edit in the burst, of all followed jobs."""
    expected = {}
    for i in range(burst):
        expected[world.followed[i % FOLLOWED_JOBS].job_id] = progress_of(i, burst)
    conn = sqlite3.connect(f"file:{world.database}?mode=ro", uri=True)
    try:
        rows = dict(conn.execute("SELECT job_id, progress FROM jobs WHERE job_id LIKE 'job:bench%'").fetchall())
    finally:
        conn.close()
    return sum(rows.get(job) == progress for job, progress in expected.items()), len(expected)


# --- database round trips of one followed edit, in this process ---------------------------------------


async def count_round_trips(directory: Path) -> tuple[int, int]:
    """(statements through the database thread, reads on the loop's thread) for one progress edit of
    a message already attributed, through the bot's own backend, dispatcher and SQLite store."""
    from cryptography.fernet import Fernet

    from bot.accounts.crypto import TokenCipher
    from bot.dispatch.backends.discord import DiscordBackend
    from bot.dispatch.dispatcher import Dispatcher
    from bot.store.sqlite import bulk
    from bot.store.sqlite.database import Database

    db = await Database.open(directory / "round-trips.db")
    stores = db.stores(TokenCipher(Fernet.generate_key()))
    n = 0
    await stores.accounts.upsert(guild_id=str(guild_id(n)), channel_id=str(account_channel(n)),
                                 token="account-token-000000-abcdefgh", discord_user_id=str(account_user(n)),
                                 max_jobs=3)
    now = time.time()
    await db.run(lambda tx: bulk.insert_jobs(tx, [dict(
        job_id="job:trips", guild_id=str(guild_id(n)), state="submitted", status="progress",
        account_channel_id=str(account_channel(n)), account_user_id=str(account_user(n)), max_jobs=3,
        params=json.dumps({"prompt": PROMPT, "style": "Realistic"}), created_at=now, submitted_at=now,
        pixverse_open=1, message_id="990000000000000000", progress=1)]))
    await stores.jobs.remember_message("990000000000000000", "job:trips")

    class NoClient:
        async def close(self) -> None:
            pass

    async def no_history(channel_id, after):
        return
        yield

    backend = DiscordBackend(NoClient(), stores.accounts, stores.jobs, no_history,  # type: ignore[arg-type]
                             application_id=str(PIXVERSE_ID))
    dispatcher = Dispatcher(stores.jobs, stores.accounts, backend)
    world = World(servers=1)
    world.followed.append(Followed("job:trips", guild_id(n), account_channel(n), account_user(n),
                                   "990000000000000000", "980000000000000000"))
    payload = json.loads(json.dumps(Payloads(world).followed(0, FOLLOWED_JOBS)))
    counts = {"thread": 0, "loop": 0}
    originals = {name: getattr(db, name) for name in ("fetchall", "execute", "run", "lookup_all")}

    def counted(name: str, kind: str):
        async def call(*args, **kwargs):
            counts[kind] += 1
            return await originals[name](*args, **kwargs)
        return call

    db.fetchall = counted("fetchall", "thread")  # fetchone goes through fetchall
    db.execute = counted("execute", "thread")
    db.run = counted("run", "thread")
    db.lookup_all = counted("lookup_all", "loop")  # lookup_one goes through lookup_all
    try:
        await backend.observe(payload)
        await dispatcher.wait_idle()
        row = await db.fetchone("SELECT progress FROM jobs WHERE job_id = 'job:trips'")
        counts["thread"] -= 1  # the check just above
        if row[0] != progress_of(0, FOLLOWED_JOBS):
            raise RuntimeError(f"the progress edit was not recorded (progress {row[0]})")
    finally:
        for name, original in originals.items():
            setattr(db, name, original)
        await dispatcher.close()
        await db.close()
    return counts["thread"], counts["loop"]


# --- the report -----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# What the bot imports at start beyond discord.py, in the order it needs them, each step measured
# in one fresh process after ``import discord`` (both clients import that): (label, modules).
IMPORT_STEPS = (
    ("settings: pydantic, pydantic-settings, bot.settings", ("bot.settings",)),
    ("token encryption: cryptography", ("bot.accounts.crypto",)),
    ("HTTP server and SQLite: aiohttp.web, aiosqlite", ("aiohttp.web", "aiosqlite", "bot.store.sqlite.database")),
    ("the bot's own modules, discord.ext.commands", ("bot.__main__", "bot.discord_bot", "bot.core", "cogs.jobs",
                                                     "cogs.accounts", "cogs.operators", "cogs.settings",
                                                     "cogs.api_tokens")),
)
_IMPORT_PROBE = """
import importlib, json, sys, time
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
import discord
steps = json.loads(sys.argv[1])
out = []
for modules in steps:
    began, before = time.perf_counter(), rss()
    for name in modules:
        importlib.import_module(name)
    out.append((time.perf_counter() - began, rss() - before))
print(json.dumps(out))
"""


async def import_costs(rounds: int, cpu: int | None) -> list[tuple[float, float]]:
    """The median (seconds, MiB of RSS) of each IMPORT_STEPS step, over ``rounds`` fresh processes."""
    samples: list[list[tuple[float, float]]] = []
    for _ in range(rounds):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _IMPORT_PROBE, json.dumps([modules for _, modules in IMPORT_STEPS]),
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=asyncio.subprocess.PIPE,
            preexec_fn=_pin(cpu))
        out, _ = await process.communicate()
        samples.append([(seconds, kib / 1024) for seconds, kib in json.loads(out)])
    return [(median([s[i][0] for s in samples]), median([s[i][1] for s in samples])) for i in range(len(IMPORT_STEPS))]


async def run(args: argparse.Namespace) -> int:
    two_cpus = len(os.sched_getaffinity(0)) >= 2 and not args.no_pin
    client_cpu = 0 if two_cpus else None
    if two_cpus:
        os.sched_setaffinity(0, {1})
    bursts = [int(b) for b in args.bursts.split(",")]
    print(f"Gateway bench: this bot (python -m bot) and a bare discord.Client with the same intents, each on its own"
          f" fake gateway; {args.servers:,} servers ({len(range(0, args.servers, ACCOUNT_EVERY)):,} with an account,"
          f" {FOLLOWED_JOBS} followed jobs on {FOLLOWED_CHANNELS} of them); floods of {args.events:,} events per"
          f" ignored kind, followed bursts of {', '.join(f'{b:,}' for b in bursts)}; {args.rounds} rounds, medians;"
          f" clients on {'CPU 0, the fakes on CPU 1' if two_cpus else 'any CPU'}"
          + (f"; sharded as Discord recommends (one shard per {SERVERS_PER_SHARD:,} servers), the bare client an"
             f" AutoShardedClient" if args.sharded else ""), flush=True)

    # The bare client imports discord.py as pip installed it, compiled; the bot as deployed is too
    # (pip install ., the image). A checkout run with PYTHONDONTWRITEBYTECODE would compile every
    # module of the bot at each start (about 0.15 s here), which no deployment pays.
    if not compileall.compile_dir(ROOT / "bot", quiet=1) or not compileall.compile_dir(ROOT / "cogs", quiet=1):
        raise RuntimeError("could not compile the bot's modules")

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        directory = Path(tmp)
        trips = await count_round_trips(directory)
        print(f"  database round trips of a followed progress edit (in process): {trips[0]} through the database"
              f" thread, {trips[1]} reads on the loop's thread", flush=True)

        worlds: dict[int, World] = {}
        for size in sorted({args.small, args.servers}):
            world = World(servers=size)
            (directory / str(size)).mkdir()
            await make_database(world, directory / str(size))
            world.fakes = {"bot": await make_fake(world, sharded=args.sharded),
                           "bare": await make_fake(world, sharded=args.sharded)}
            worlds[size] = world
        try:
            # Start to ready and idle RSS: a fresh process each round, at each size.
            ready: dict[tuple[int, str], list[float]] = {}
            phases: dict[tuple[int, str], list[tuple[float, float]]] = {}
            idle: dict[tuple[int, str], list[float]] = {}
            private: dict[tuple[int, str], list[float]] = {}
            mappings: dict[str, list[Counter[str]]] = {}  # at --small, per round
            for r in range(args.rounds):
                for size, world in worlds.items():
                    for name in (("bot", "bare") if r % 2 == 0 else ("bare", "bot")):
                        client = await start_client(name, world, directory / str(size), client_cpu)
                        try:
                            ready.setdefault((size, name), []).append(client.ready_at - client.started)
                            # Its first IDENTIFY splits the start: the client's own (imports, settings,
                            # and for the bot its database, HTTP API and commands), then the gateway's.
                            identified = min(t for t in world.fakes[name].identified_at if t >= client.started)
                            phases.setdefault((size, name), []).append(
                                (identified - client.started, client.ready_at - identified))
                            await settle(client, at_least=1.0)
                            idle.setdefault((size, name), []).append(rss_kib(client.pid) / 1024)
                            private.setdefault((size, name), []).append(rss_kib(client.pid, "RssAnon") / 1024)
                            if size == args.small:
                                mappings.setdefault(name, []).append(rss_by_mapping(client.pid))
                        finally:
                            await stop_client(client)
                        print(f"  round {r + 1}: {size:,} servers, {name}: ready in"
                              f" {ready[size, name][-1]:.2f} s, idle RSS {idle[size, name][-1]:.1f} MiB", flush=True)

            per_event: dict[tuple[str, str], list[float]] = {}
            growth: dict[tuple[str, int], list[float]] = {}
            verified: list[str] = []
            if not args.start_only:
                # Floods, on one process of each at the large size.
                world = worlds[args.servers]
                payloads = Payloads(world)
                clients = {name: await start_client(name, world, directory / str(args.servers), client_cpu)
                           for name in ("bot", "bare")}
                try:
                    for client in clients.values():
                        await settle(client, at_least=2.0)
                        await measure_idle(client)
                    print("  idle CPU: " + ", ".join(f"{c.name} {c.idle_ns_per_s / 1e6:.2f} ms/s" for c in clients.values()),
                          flush=True)
                    for r in range(args.rounds):
                        for kind, (label, event, make) in KINDS.items():
                            data = [json.dumps(make(payloads, i)) for i in range(args.events)]
                            for name in (("bot", "bare") if r % 2 == 0 else ("bare", "bot")):
                                result = await flood(clients[name], event, data)
                                per_event.setdefault((kind, name), []).append(result.ns_per_event / 1000)
                                print(f"  round {r + 1}: {label}, {name}: {result.ns_per_event / 1000:.1f} µs/event"
                                      f" ({result.seconds:.2f} s)", flush=True)
                        for burst in bursts:
                            data = [json.dumps(payloads.followed(i, burst)) for i in range(burst)]
                            for name in (("bot", "bare") if r % 2 == 0 else ("bare", "bot")):
                                client = clients[name]
                                await settle(client)
                                result = await flood(client, "MESSAGE_UPDATE", data, pace=PACE_SECONDS if name == "bot" else 0)
                                per_event.setdefault((f"followed {burst}", name), []).append(result.ns_per_event / 1000)
                                growth.setdefault((name, burst), []).append(result.peak_rss_growth_kib / 1024)
                                note = ""
                                if name == "bot":
                                    good, total = check_followed(world, burst)
                                    verified.append(f"{good}/{total}")
                                    note = f", {good}/{total} jobs show their last progress"
                                print(f"  round {r + 1}: followed progress edits, burst of {burst:,}, {name}:"
                                      f" {result.ns_per_event / 1000:.1f} µs/event ({result.seconds:.2f} s),"
                                      f" RSS +{result.peak_rss_growth_kib / 1024:.1f} MiB{note}", flush=True)
                finally:
                    for client in clients.values():
                        await stop_client(client)
        finally:
            for world in worlds.values():
                for fake in world.fakes.values():
                    await fake.stop()

    # --- the table ---
    ok = True
    if not args.start_only:
        print()
        print(f"{'event':<52} {'this bot µs':>12} {'bare µs':>9} {'ratio':>7}  target")
        for kind, (label, _, _) in KINDS.items():
            bot, bare = median(per_event[kind, "bot"]), median(per_event[kind, "bare"])
            good = bot <= 0.5 * bare
            ok &= good
            print(f"{label:<52} {bot:>12.1f} {bare:>9.1f} {bot / bare:>6.2f}×  ≤ 0.5×  {verdict(good)}")
        for burst in bursts:
            bot, bare = median(per_event[f"followed {burst}", "bot"]), median(per_event[f"followed {burst}", "bare"])
            good = bot <= 2 * bare
            ok &= good
            print(f"{f'PixVerse progress edit of a followed job, {burst:,} burst':<52} {bot:>12.1f} {bare:>9.1f}"
                  f" {bot / bare:>6.2f}×  ≤ 2×    {verdict(good)}")
        small, large = bursts[0], bursts[-1]
        flat = median(per_event[f"followed {large}", "bot"]) / median(per_event[f"followed {small}", "bot"])
        ok &= flat <= 1.2
        print(f"followed edit, {large:,} burst over {small:,} burst (this bot): {flat:.2f}×  ≤ 1.2×  {verdict(flat <= 1.2)}")
        ok &= trips[0] + trips[1] <= 1
        print(f"database round trips of a followed progress edit: {trips[0]} (database thread) + {trips[1]} (loop-thread"
              f" reads)  ≤ 1  {verdict(trips[0] + trips[1] <= 1)}")
    print()
    print(f"{'memory and startup':<52} {'this bot':>12} {'bare':>9} {'diff':>7}  target")
    for size in sorted(worlds):
        bot, bare = median(idle[size, "bot"]), median(idle[size, "bare"])
        good = bot <= bare + 15
        ok &= good
        print(f"{f'idle RSS at {size:,} servers (MiB)':<52} {bot:>12.1f} {bare:>9.1f} {bot - bare:>+7.1f}  ≤ +15   {verdict(good)}")
        bot, bare = median(private[size, "bot"]), median(private[size, "bare"])
        print(f"{f'  of which private (RssAnon) (MiB)':<52} {bot:>12.1f} {bare:>9.1f} {bot - bare:>+7.1f}  (not a target)")
    # Where the idle difference lies: RSS per mapping (smaps), medians of the rounds at --small.
    names = {n for by in mappings["bot"] + mappings["bare"] for n in by}
    where = {n: tuple(median([by[n] / 1024 for by in mappings[c]]) for c in ("bot", "bare")) for n in names}
    shown = sorted((n for n, (bot, bare) in where.items() if abs(bot - bare) >= 0.5), key=lambda n: where[n][1] - where[n][0])
    rest = sum(bot - bare for n, (bot, bare) in where.items() if n not in shown)
    print(f"  {f'idle RSS at {args.small:,} servers by mapping (MiB; not a target)':<64} {'bot':>6} {'bare':>6} {'diff':>6}")
    for n in shown:
        print(f"    {n:<62} {where[n][0]:>6.1f} {where[n][1]:>6.1f} {where[n][0] - where[n][1]:>+6.1f}")
    print(f"    {'every other mapping':<62} {'':>13} {rest:>+6.1f}")
    if not args.start_only:
        through = median(growth["bot", large])
        good = through <= 20
        ok &= good
        print(f"{f'RSS growth through a {large:,}-event burst (MiB)':<52} {through:>12.1f}"
              f" {median(growth['bare', large]):>9.1f} {'':>7}  ≤ +20   {verdict(good)}")
    # Each round starts the two clients one after the other: the ratio within a round cancels the
    # machine's slower and faster spells, and the verdict is on the median of those ratios.
    for size in sorted(worlds, reverse=True):
        bot, bare = median(ready[size, "bot"]), median(ready[size, "bare"])
        ratios = [b / a for b, a in zip(ready[size, "bot"], ready[size, "bare"])]
        gaps = [b - a for b, a in zip(ready[size, "bot"], ready[size, "bare"])]
        if size == args.servers and not args.sharded:
            good = median(ratios) <= 1.1
            ok &= good
            target = f"≤ 1.1×  {verdict(good)}"
        elif args.sharded and shards_for(size) > 1:
            target = f"(not a target: both wait {5 * (shards_for(size) - 1)} s between IDENTIFYs)"
        else:
            target = "(not a target)"
        shards = worlds[size].fakes["bot"].shard_count
        where = f"start to ready at {size:,} servers" + (f", {shards} shards" if shards > 1 else "")
        if shards > 1:
            spread = Counter(worlds[size].fakes["bot"].shard_of(guild_id(n), shards) for n in range(size))
            print(f"  servers per shard at {size:,}: {', '.join(f'{spread[i]:,}' for i in range(shards))}")
        print(f"{where + ' (s)':<52} {bot:>12.2f} {bare:>9.2f} {median(ratios):>6.2f}×  {target}")
        print(f"{'  per round: bot ÷ bare':<52} {', '.join(f'{r:.2f}×' for r in ratios)}"
              f" (the bot {', '.join(f'{g:+.2f}' for g in gaps)} s)")
        own, gateway = ({name: median([p[i] for p in phases[size, name]]) for name in ("bot", "bare")} for i in (0, 1))
        print(f"{'  to the first IDENTIFY: the client alone (s)':<52} {own['bot']:>12.2f} {own['bare']:>9.2f}"
              f" {own['bot'] - own['bare']:>+7.2f}  (not a target)")
        print(f"{'  from it to ready: the servers (s)':<52} {gateway['bot']:>12.2f} {gateway['bare']:>9.2f}"
              f" {gateway['bot'] / gateway['bare']:>6.2f}×  (not a target)")
    print(f"  what the bot imports beyond discord.py, in the order it needs it (median of {args.rounds} fresh"
          f" processes; not a target):")
    for (label, _), (seconds, mib) in zip(IMPORT_STEPS, await import_costs(args.rounds, client_cpu)):
        print(f"    {label:<60} {seconds:>6.3f} s {mib:>+6.1f} MiB")
    if verified:
        print(f"followed jobs showing their last progress after each burst: {', '.join(verified)}")
    print()
    print("Overall:", "all targets met" if ok else "some targets missed (see FAIL above)")
    command = (f"cd {ROOT} && python bench/gateway_bench.py --servers {args.servers} --small {args.small}"
               f" --events {args.events} --bursts {args.bursts} --rounds {args.rounds}"
               + (" --start-only" if args.start_only else "") + (" --sharded" if args.sharded else ""))
    print(f"Rerun: {command}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=5000, help="servers of the floods and the start-to-ready figure")
    parser.add_argument("--small", type=int, default=100, help="the second size for idle RSS")
    parser.add_argument("--events", type=int, default=5000, help="events per flood of each ignored kind")
    parser.add_argument("--bursts", default="2000,20000", help="followed progress-edit bursts, smallest first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--servers 1000 --events 2000 --bursts 1000,10000")
    parser.add_argument("--start-only", action="store_true",
                        help="only start to ready and idle RSS (no floods): about 10 s a round at 5,000 servers")
    parser.add_argument("--sharded", action="store_true",
                        help="with --start-only: one shard per SERVERS_PER_SHARD servers, as Discord recommends")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the clients and the fakes to CPUs")
    args = parser.parse_args()
    if args.quick:
        args.servers, args.events, args.bursts = 1000, 2000, "1000,10000"
    if args.sharded and not args.start_only:
        parser.error("--sharded measures start to ready and idle memory only: add --start-only")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
