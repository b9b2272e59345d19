"""Two ``python -m bot`` processes, one shard each, on one PostgreSQL, against the fake Discord.

Each process receives only its shard's server (the fake gateway honours the shard in
IDENTIFY); jobs are asked for through both processes' HTTP APIs and through slash commands, for
both servers. Every job is followed by the process of its server's shard, no account is ever
above its maxJobs at the fake PixVerse, and a process killed mid-job is either replaced (its jobs
complete) or left dead (its jobs end at their timeout, their slots freed).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from tests.e2e.conftest import BOT_TOKEN, MEMBER_ID, SEND_MESSAGES
from tests.e2e.fake_discord import FakeDiscord
from tests.postgres_support import fresh_schema, url_with_schema
from tests.net import free_port
from tests.receiver import reply_receiver

ROOT = Path(__file__).resolve().parents[2]
KEY = Fernet.generate_key().decode()


def on_shard(base: int, shard: int, count: int = 2) -> int:
    """The first snowflake from ``base`` whose server sits on ``shard``."""
    guild = base
    while (guild >> 22) % count != shard:
        guild += 1 << 22
    return guild


GUILDS = (on_shard(860000000000000000, 0), on_shard(870000000000000000, 1))
ASKED_IN = {guild: guild + 1 for guild in GUILDS}  # where members use the slash command
# Per server: (account channel, account user, maxJobs)
ACCOUNTS = {
    GUILDS[0]: [(GUILDS[0] + 10, 880000000000000010, 2), (GUILDS[0] + 11, 880000000000000011, 3),
                (GUILDS[0] + 12, 880000000000000012, 1)],
    GUILDS[1]: [(GUILDS[1] + 10, 880000000000000020, 3), (GUILDS[1] + 11, 880000000000000021, 2),
                (GUILDS[1] + 12, 880000000000000022, 2)],
}
MAX_JOBS = {user: max_jobs for accounts in ACCOUNTS.values() for _, user, max_jobs in accounts}



@dataclass
class BotProcess:
    shard: int
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    fake: FakeDiscord
    url: str  # DATABASE_URL of the processes (the test's schema)
    tokens: dict[int, str]  # server -> its HTTP API token
    bots: list[BotProcess]
    db: object  # the test's own connection (bot.store.postgres.database.Database)
    env: dict[str, str]

    async def start(self, bot: BotProcess) -> None:
        env = {**self.env, "SHARD_IDS": str(bot.shard), "HTTP_PORT": str(bot.port)}
        handle = bot.log.open("ab")
        bot.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=bot.log.parent, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=handle,
        )
        handle.close()
        await self.until_healthy(bot)

    async def until_healthy(self, bot: BotProcess, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert bot.process.returncode is None, bot.text()[-3000:]
                try:
                    async with http.get(f"http://127.0.0.1:{bot.port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, bot.text()[-3000:]
                await asyncio.sleep(0.2)

    async def counts(self) -> Counter:
        rows = await self.db.fetch("SELECT guild_id, status FROM jobs")
        return Counter((int(row["guild_id"]), row["status"]) for row in rows)

    async def until(self, check, timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{what} not reached in {timeout}s: {await self.counts()}\n"
                                     + "\n".join(b.text()[-2000:] for b in self.bots))
            await asyncio.sleep(0.2)


def bot_env(fake: FakeDiscord, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISCORD_", "PIXVERSE_", "TOKEN_", "DATABASE_", "LOG_", "SHARD_", "LEASE_", "HTTP_"))}
    env.update(
        PYTHONPATH=str(ROOT), DISCORD_TOKEN=BOT_TOKEN, DATABASE_URL=url, TOKEN_ENCRYPTION_KEY=KEY,
        DISCORD_API_BASE_URL=fake.api_base_url, DISCORD_GATEWAY_URL=fake.gateway_url, HTTP_HOST="127.0.0.1",
        LOG_LEVEL="INFO", SHARD_COUNT="2", PIXVERSE_QUEUE_SIZE="400", PIXVERSE_SUBMIT_INTERVAL_SECONDS="0",
        LEASE_HEARTBEAT_SECONDS="1", LEASE_EXPIRY_SECONDS="3", PIXVERSE_JOB_TIMEOUT_SECONDS="120",
        REPLY_URL_ALLOW_PRIVATE="true",  # the test's replyUrl receiver listens on 127.0.0.1
    )
    env.update(extra)
    return env


@pytest.fixture
async def cluster(tmp_path, request):
    from bot.store.postgres.database import Database

    extra = getattr(request, "param", {})
    fake = FakeDiscord(bot_token=BOT_TOKEN)
    fake.shard_count = 2
    for guild in GUILDS:
        channels = [ASKED_IN[guild]] + [channel for channel, _, _ in ACCOUNTS[guild]]
        fake.add_guild(guild, name=f"server {guild}", channel_ids=channels)
        for channel, user, _ in ACCOUNTS[guild]:
            fake.add_user_token(f"user-token-{user}-xxxxxxxxxxxx", user_id=user, username=f"pixverse-{user}")
    fake.add_pixverse(step_delay=0.02)
    async with AsyncExitStack() as stack:
        await fake.start()
        stack.push_async_callback(fake.stop)
        url, schema = await stack.enter_async_context(fresh_schema())
        db = await Database.open(url_with_schema(url, schema), pool_size=2)
        stack.push_async_callback(db.close)
        stores = db.stores(TokenCipher(KEY))
        tokens = {}
        for guild in GUILDS:
            for channel, user, max_jobs in ACCOUNTS[guild]:
                await stores.accounts.upsert(guild_id=str(guild), channel_id=str(channel),
                                             token=f"user-token-{user}-xxxxxxxxxxxx", discord_user_id=str(user),
                                             max_jobs=max_jobs)
            tokens[guild] = await stores.tokens.create(str(guild), "test")
        bots = [BotProcess(shard, free_port(), tmp_path / f"bot-{shard}.log") for shard in (0, 1)]
        made = Cluster(fake, url_with_schema(url, schema), tokens, bots, db,
                       bot_env(fake, url_with_schema(url, schema), **extra))

        async def stop_all() -> None:
            stopped = []
            for bot in bots:
                if bot.process is not None and bot.process.returncode is None:
                    bot.process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(bot.process.wait(), timeout=20)
                    except TimeoutError:
                        bot.process.kill()
                        await bot.process.wait()
                    stopped.append(bot)
            # Each process stopped by SIGTERM left cleanly: exit 0, no error on the way out.
            for bot in stopped:
                text = bot.text()
                assert bot.process.returncode == 0, text[-3000:]
                assert "Traceback" not in text and " ERROR " not in text, text[-5000:]

        stack.push_async_callback(stop_all)
        for bot in bots:
            await made.start(bot)
        await made.until(lambda: _async(fake.sessions_by_shard() == {0: 1, 1: 1}), 30, "one session per shard")
        yield made


async def _async(value):
    return value


async def http_create(http: aiohttp.ClientSession, cluster: Cluster, bot: BotProcess, guild: int, n: int,
                      **extra: str) -> dict:
    async with http.post(
        f"http://127.0.0.1:{bot.port}/v1/pixverse/create",
        json={"prompt": f"fox {guild} {n} via {bot.shard}", "style": "Realistic", **extra},
        headers={"Authorization": f"Bearer {cluster.tokens[guild]}"},
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return body


async def slash_create(cluster: Cluster, guild: int, n: int) -> str:
    result = await cluster.fake.invoke(
        "pixverse-create", {"prompt": f"fox {guild} {n} via slash", "style": "Realistic"},
        guild_id=guild, channel_id=ASKED_IN[guild], user_id=MEMBER_ID, permissions=SEND_MESSAGES, timeout=120,
    )
    assert "jobid:" in result.content, result.content
    return result.content


def sent_by(bot: BotProcess) -> set[str]:
    return set(re.findall(r"job\.started job=(job:\S+)", bot.text()))


def ended_by(bot: BotProcess) -> set[str]:
    return set(re.findall(r"job\.completed job=(job:\S+)", bot.text()))


async def test_500_jobs_through_both_processes_each_followed_by_its_shards_process(cluster):
    fake = cluster.fake
    stack_receiver = AsyncExitStack()
    # A replyUrl receiver: the final callback comes from the process of the job's shard, whichever
    # process took the request.
    receiver = await stack_receiver.enter_async_context(reply_receiver())
    callbacks, reply_url = receiver.bodies, receiver.url
    asked_with_reply: dict[str, str] = {}  # job id -> its replyRef
    try:
        async with aiohttp.ClientSession() as http:
            asks = []
            for guild in GUILDS:
                for n in range(200):
                    extra = {"replyUrl": reply_url, "replyRef": f"{guild}-{n}"} if n < 20 else {}
                    asks.append(http_create(http, cluster, cluster.bots[n % 2], guild, n, **extra))
                for n in range(50):
                    asks.append(slash_create(cluster, guild, n))
            for answer in await asyncio.gather(*asks):
                if isinstance(answer, dict) and "replyRef" in answer:
                    asked_with_reply[answer["jobid"]] = answer["replyRef"]
            assert len(asked_with_reply) == 40

            async def all_done() -> bool:
                counts = await cluster.counts()
                return counts[(GUILDS[0], "completed")] == 250 and counts[(GUILDS[1], "completed")] == 250

            await cluster.until(all_done, 240, "500 completed jobs")

            async def all_called_back() -> bool:
                return {c["jobid"] for c in callbacks if c["status"] == "completed"} == set(asked_with_reply)

            await cluster.until(all_called_back, 30, "every replyUrl called back")
    finally:
        await stack_receiver.aclose()
    finals = [c for c in callbacks if c["status"] == "completed"]
    assert len(finals) == 40  # once each
    assert {c["jobid"]: c["replyRef"] for c in finals} == asked_with_reply
    # PixVerse never saw an account above its maxJobs, and every account was used.
    for user, max_jobs in MAX_JOBS.items():
        assert 1 <= fake.pixverse_max_executing[user] <= max_jobs, (user, fake.pixverse_max_executing)
    # Each job was sent and ended by the process of its server's shard, never by the other.
    rows = await cluster.db.fetch("SELECT job_id, guild_id FROM jobs")
    by_guild = {int(row["guild_id"]): set() for row in rows}
    for row in rows:
        by_guild[int(row["guild_id"])].add(row["job_id"])
    for shard, guild in enumerate(GUILDS):
        bot, other = cluster.bots[shard], cluster.bots[1 - shard]
        assert by_guild[guild] <= sent_by(bot) and by_guild[guild] <= ended_by(bot)
        assert not by_guild[guild] & (sent_by(other) | ended_by(other))
    # Capacity is whole: nothing holds a slot, nothing waits.
    assert await cluster.db.fetchval("SELECT COUNT(*) FROM jobs WHERE state <> 'done'") == 0
    for bot in cluster.bots:
        assert BOT_TOKEN not in bot.text() and "user-token-" not in bot.text()
        assert "Traceback" not in bot.text(), bot.text()[-3000:]


async def hold_jobs(cluster: Cluster, per_guild: int) -> None:
    """Jobs of both servers that PixVerse starts and then holds (the fake's hold point)."""
    cluster.fake.pixverse_hold = True
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(http_create(http, cluster, cluster.bots[n % 2], guild, n)
                               for guild in GUILDS for n in range(per_guild)))
    await cluster.fake.wait_for_pixverse_held(2 * per_guild, timeout=60)


async def test_a_killed_process_restarted_completes_its_jobs_and_capacity_is_whole(cluster):
    fake = cluster.fake
    await hold_jobs(cluster, 4)
    killed = cluster.bots[1]
    killed.process.send_signal(signal.SIGKILL)
    await killed.process.wait()
    await cluster.start(killed)  # the same shard again; its predecessor's jobs are its to resume
    fake.pixverse_hold = False
    fake.pixverse_release()

    async def all_done() -> bool:
        counts = await cluster.counts()
        return counts[(GUILDS[0], "completed")] == 4 and counts[(GUILDS[1], "completed")] == 4

    await cluster.until(all_done, 90, "every held job completed")
    assert await cluster.db.fetchval("SELECT COUNT(*) FROM jobs WHERE state <> 'done'") == 0
    for user, max_jobs in MAX_JOBS.items():
        assert fake.pixverse_max_executing.get(user, 0) <= max_jobs
    # The whole capacity is back: as many new jobs as the server's maxJobs are placed at once, none
    # queued (held at PixVerse, so that none ends meanwhile), and the next one waits.
    fake.pixverse_hold = True
    capacity = sum(m for _, _, m in ACCOUNTS[GUILDS[1]])
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(http_create(http, cluster, cluster.bots[0], GUILDS[1], 100 + n)
                                         for n in range(capacity)))
        assert [answer.get("queuePosition") for answer in answers] == [None] * capacity
        assert (await http_create(http, cluster, cluster.bots[1], GUILDS[1], 200))["queuePosition"] == 1
    fake.pixverse_hold = False
    fake.pixverse_release()


@pytest.mark.parametrize("cluster", [{"PIXVERSE_JOB_TIMEOUT_SECONDS": "8"}], indirect=True)
async def test_a_killed_process_left_dead_never_leaves_its_jobs_executing(cluster):
    await hold_jobs(cluster, 3)
    dead = cluster.bots[1]
    dead.process.send_signal(signal.SIGKILL)
    await dead.process.wait()
    # PixVerse finishes every job; only the live process hears of it, for its own shard's.
    cluster.fake.pixverse_hold = False
    cluster.fake.pixverse_release()

    async def ended() -> bool:
        counts = await cluster.counts()
        return counts[(GUILDS[1], "failed")] == 3 and counts[(GUILDS[0], "completed")] == 3

    # The live process's sweep ends the dead shard's jobs at their timeout (8 s from submission)
    # and frees their slots; its own shard's jobs complete as usual.
    await cluster.until(ended, 40, "the dead shard's jobs ended")
    rows = await cluster.db.fetch(
        "SELECT error, state, slot_held, updated_at - submitted_at AS ran FROM jobs WHERE guild_id = $1",
        str(GUILDS[1]))
    assert {(row["error"], row["state"], row["slot_held"]) for row in rows} == {("Timed out", "done", False)}
    assert all(row["ran"] >= 8 for row in rows)  # not before their timeout


async def test_a_members_job_ended_by_the_other_process_is_told_in_the_members_own_reply(cluster):
    """A cancel through the HTTP API of the process that does not follow the server: that process
    ends the job and tells the one that does (NOTIFY), which edits the member's reply; no one
    posts a second message for the job."""
    from tests.e2e.status_support import settled, word_of

    guild, other = GUILDS[0], cluster.bots[1]  # the server is on shard 0; process 1 takes the cancel
    cluster.fake.pixverse_hold = True
    try:
        result = await cluster.fake.invoke(
            "pixverse-create", {"prompt": "a fox told across processes", "style": "Realistic"},
            guild_id=guild, channel_id=ASKED_IN[guild], user_id=MEMBER_ID, permissions=SEND_MESSAGES, timeout=60)
        job_id = re.search(r"jobid: (job:\S+)", result.content).group(1)
        await cluster.fake.wait_for_pixverse_held(1, timeout=30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{other.port}/v1/pixverse/jobs/cancel/",
                                params={"jobid": job_id},
                                headers={"Authorization": f"Bearer {cluster.tokens[guild]}"}) as response:
                assert response.status == 200, await response.text()
        shown = await settled(result, timeout=30)
        assert word_of(shown["content"]) == "cancelled" and job_id in shown["content"]
        assert [m for m in cluster.fake.channel_messages.get(ASKED_IN[guild], [])
                if m["author"]["id"] == str(cluster.fake.bot_user_id)] == []
    finally:
        cluster.fake.pixverse_hold = False
        cluster.fake.pixverse_release()
