"""``python -m bot`` as a process against the fake Discord: startup, key handling, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.store.sqlite import database as db
from bot.accounts.crypto import TokenCipher
from bot.store.sqlite.accounts import AccountRepository
from tests.conftest import TOKEN
from tests.e2e.conftest import BOT_TOKEN, CHANNEL_ID, GUILD_ID

ROOT = Path(__file__).resolve().parents[2]


def bot_env(fake, database: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "PIXVERSE_", "TOKEN_", "DATABASE_", "LOG_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        DISCORD_TOKEN=BOT_TOKEN,
        DATABASE_PATH=str(database),
        DISCORD_API_BASE_URL=fake.api_base_url,
        DISCORD_GATEWAY_URL=fake.gateway_url,
        LOG_LEVEL="DEBUG",
        HTTP_PORT="0",
    )
    env.update(extra)
    return env


async def start_process(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 20) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout)
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_with_exit_0_and_no_wal_left(fake, tmp_path, sig):
    database = tmp_path / "data" / "pixverse.db"
    process = await start_process(bot_env(fake, database), tmp_path)
    try:
        await fake.wait_for_identify(timeout=20)
        # A command round trip proves the bot is fully up (database open, cog loaded).
        result = await fake.invoke("pixverse-accounts", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID)
        assert result.content == "404 · Configuration not found"
    finally:
        process.send_signal(sig)
    code, stderr = await finish(process)
    assert code == 0, stderr
    assert "Stopped cleanly" in stderr
    assert database.exists()
    assert not database.with_name("pixverse.db-wal").exists()
    assert BOT_TOKEN not in stderr


async def test_generated_key_is_written_once_private_and_reused(fake, tmp_path):
    database = tmp_path / "data" / "pixverse.db"
    key_file = tmp_path / "data" / "pixverse.db.key"
    for _ in range(2):
        process = await start_process(bot_env(fake, database), tmp_path)
        await fake.wait_for_identify(timeout=20)
        fake._identified.clear()
        process.send_signal(signal.SIGTERM)
        code, stderr = await finish(process)
        assert code == 0, stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key not in stderr
    # The key decrypts what the bot stores.
    TokenCipher(key)


async def test_a_key_that_cannot_decrypt_the_database_stops_the_bot_clearly(fake, tmp_path):
    database = tmp_path / "data" / "pixverse.db"
    opened = await db.Database.open(database)
    await AccountRepository(opened, TokenCipher(Fernet.generate_key())).upsert(
        guild_id=str(GUILD_ID), channel_id=str(CHANNEL_ID), token=TOKEN, discord_user_id="1", max_jobs=1
    )
    await opened.close()

    wrong_key = Fernet.generate_key().decode()
    process = await start_process(bot_env(fake, database, TOKEN_ENCRYPTION_KEY=wrong_key), tmp_path)
    code, stderr = await finish(process)
    assert code == 2  # no restart helps: the key must change
    assert "Traceback" not in stderr
    assert f"The token key in use cannot decrypt the tokens stored in {database}" in stderr
    assert wrong_key not in stderr
    # Nothing was lost: the row is still there.
    conn = await db.connect(database)
    async with conn.execute("SELECT COUNT(*) FROM accounts") as cur:
        assert (await cur.fetchone())[0] == 1
    await db.close(conn)


async def test_rejected_bot_token_is_one_clear_line(fake, tmp_path):
    process = await start_process(bot_env(fake, tmp_path / "db.sqlite", DISCORD_TOKEN="wrong-bot-token"), tmp_path)
    code, stderr = await finish(process)
    assert code == 2  # no restart helps: the token must change
    assert "Discord rejected DISCORD_TOKEN" in stderr
    assert "Traceback" not in stderr and "wrong-bot-token" not in stderr


async def test_a_refused_intent_names_it_and_is_not_retried(fake, tmp_path):
    """Discord closes the gateway with 4014 until Message Content is enabled in the Developer Portal."""
    fake.refuse_intents = True
    process = await start_process(bot_env(fake, tmp_path / "db.sqlite"), tmp_path)
    code, stderr = await finish(process)
    assert code == 2
    assert [line.split(" CRITICAL ", 1)[1] for line in stderr.splitlines() if " CRITICAL " in line] == [
        "bot: Discord refused the Message Content intent the bot needs: enable it in the Developer Portal"
        " (Bot page, Privileged Gateway Intents)"]
