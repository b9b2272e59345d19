"""SIGKILL of ``python -m bot`` in the middle of a stream of account saves, five times over.

Every save the bot answered 204 must be in the database after the kill (``synchronous=FULL``
also makes it survive a power cut; a kill is what a test can do), the file must pass
``PRAGMA integrity_check``, and the bot must start again on it and take more saves.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3

import aiohttp
from cryptography.fernet import Fernet

from tests.e2e.conftest import GUILD_ID, MANAGE_GUILD, ADMIN_ID
from tests.e2e.test_http_api import free_port
from tests.e2e.test_process_e2e import bot_env, finish, start_process
from tests.hostile.figures import Row, record

KILLS = 5
CHANNELS = 8_000
FIRST_CHANNEL = 810_000_000_000_100_000
FIRST_USER = 860_000_000_000_000_000
CONCURRENCY = 8


def account_token(n: int) -> str:
    return f"kill-test-token-{n:06d}-" + "k" * 40


async def wait_healthy(base: str, session: aiohttp.ClientSession, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(base + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def test_no_acknowledged_save_is_lost_to_sigkill(fake, tmp_path):
    channels = [FIRST_CHANNEL + n for n in range(CHANNELS)]
    fake.add_guild(GUILD_ID + 7, name="Big", channel_ids=channels)
    for n in range(CHANNELS):
        fake.add_user_token(account_token(n), user_id=FIRST_USER + n, username=f"acct{n}")
    guild = str(GUILD_ID + 7)
    database = tmp_path / "data" / "pixverse.db"
    env_extra = {"TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "LOG_LEVEL": "WARNING"}
    acknowledged: set[str] = set()
    next_channel = 0
    api_token = ""
    rng = random.Random(11)
    row = Row(f"SIGKILL ×{KILLS} under a stream of account saves")
    integrity: list[str] = []
    per_kill: list[int] = []
    async with aiohttp.ClientSession() as session:
        for kill in range(KILLS):
            port = free_port()
            fake._identified.clear()
            process = await start_process(bot_env(fake, database, HTTP_PORT=str(port), **env_extra), tmp_path)
            base = f"http://127.0.0.1:{port}"
            try:
                await fake.wait_for_identify(timeout=30)
                await wait_healthy(base, session)
                if not api_token:
                    result = await fake.invoke("pixverse-api-token", None, guild_id=GUILD_ID + 7,
                                               channel_id=channels[0], user_id=ADMIN_ID, permissions=MANAGE_GUILD)
                    api_token = result.content.split("```\n")[1].split("\n")[0]
                headers = {"Authorization": f"Bearer {api_token}"}

                async def saver() -> None:
                    nonlocal next_channel
                    while next_channel < CHANNELS:
                        n = next_channel
                        next_channel += 1
                        channel = str(channels[n])
                        body = {"discord": account_token(n), "server": guild, "channel": channel, "maxJobs": 2}
                        try:
                            async with session.post(f"{base}/v1/pixverse/account/{channel}", json=body,
                                                    headers=headers) as response:
                                row.requests += 1
                                if response.status == 204:
                                    acknowledged.add(channel)
                                elif response.status >= 500:
                                    row.server_errors += 1
                        except aiohttp.ClientError:
                            return  # killed: this save was never acknowledged

                savers = [asyncio.create_task(saver()) for _ in range(CONCURRENCY)]
                await asyncio.sleep(rng.uniform(0.4, 1.2))
            finally:
                process.send_signal(signal.SIGKILL)
            streaming = next_channel < CHANNELS
            await asyncio.gather(*savers)
            await finish(process)
            conn = sqlite3.connect(database)
            try:
                integrity.append(conn.execute("PRAGMA integrity_check").fetchone()[0])
                stored = {row_[0] for row_ in conn.execute("SELECT channel_id FROM accounts")}
            finally:
                conn.close()
            per_kill.append(len(acknowledged) - sum(per_kill))
            assert streaming and per_kill[-1] > 0, f"kill {kill + 1} did not fall in the middle of saves"
            row.writes_lost = len(acknowledged - stored)
            assert row.writes_lost == 0, f"kill {kill + 1}: acknowledged saves lost: {sorted(acknowledged - stored)[:5]}"
    row.notes.append(f"saves acknowledged before each kill: {per_kill}; integrity_check: {integrity}")
    record(row)
    assert integrity == ["ok"] * KILLS
    assert row.server_errors == 0
