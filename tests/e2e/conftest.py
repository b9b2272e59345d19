"""The real bot (PixverseBot, its CommandTree and cogs) against the fake Discord."""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections.abc import AsyncIterator

import pytest
import yarl
from cryptography.fernet import Fernet

from tests.conftest import TOKEN, TOKEN_2
from tests.e2e.fake_discord import FakeDiscord

with warnings.catch_warnings():
    # discord.player imports the stdlib `audioop`, deprecated since 3.11.
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord

from bot.discord_bot import PixverseBot
from bot.settings import Settings

BOT_TOKEN = "e2e-bot-token-value"
GUILD_ID = 810000000000000001
CHANNEL_ID = 810000000000000002
CHANNEL_2_ID = 810000000000000003
OTHER_GUILD_ID = 820000000000000001
OTHER_CHANNEL_ID = 820000000000000002
ADMIN_ID = 830000000000000001
MEMBER_ID = 830000000000000002
ACCOUNT_USER_ID = 840000000000000001
ACCOUNT_2_USER_ID = 840000000000000002
MANAGE_GUILD = 0x20
SEND_MESSAGES = 0x800


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(bot_token=BOT_TOKEN)
    server.add_guild(GUILD_ID, name="Studio", channel_ids=[CHANNEL_ID, CHANNEL_2_ID])
    server.add_guild(OTHER_GUILD_ID, name="Elsewhere", channel_ids=[OTHER_CHANNEL_ID])
    server.add_user_token(TOKEN, user_id=ACCOUNT_USER_ID, username="pixverse-one")
    server.add_user_token(TOKEN_2, user_id=ACCOUNT_2_USER_ID, username="pixverse-two")
    await server.start()
    yield server
    await server.stop()


def make_settings(tmp_path, fake: FakeDiscord, **overrides) -> Settings:
    values = dict(
        _env_file=None,
        discord_token=BOT_TOKEN,
        database_path=tmp_path / "data" / "pixverse.db",
        token_encryption_key=Fernet.generate_key().decode(),
        discord_api_base_url=fake.api_base_url,
        discord_gateway_url=fake.gateway_url,
        pixverse_submit_interval_seconds=0,
        http_port=0,  # tests of the HTTP API pick a free port themselves
        reply_url_allow_private=True,  # the tests' replyUrl receiver listens on 127.0.0.1
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path, fake: FakeDiscord) -> Settings:
    return make_settings(tmp_path, fake)


@pytest.fixture
def restore_discord_endpoints():
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


async def start_bot(settings: Settings, fake: FakeDiscord) -> tuple[PixverseBot, asyncio.Task]:
    bot = PixverseBot(settings, guild_ready_timeout=0.05)
    await bot.login(settings.discord_token.get_secret_value())
    task = asyncio.create_task(bot.connect(reconnect=False))
    await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
    assert bot.get_guild(GUILD_ID) is not None
    return bot, task


async def stop_bot(bot: PixverseBot, task: asyncio.Task) -> None:
    await bot.close()
    await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def bot(settings, fake, restore_discord_endpoints) -> AsyncIterator[PixverseBot]:
    running, task = await start_bot(settings, fake)
    yield running
    await stop_bot(running, task)


def hold_the_database(path, seconds: float):
    """Another process's write transaction on the bot's SQLite file for ``seconds`` (or until the
    returned function is called): the bot's writes wait for it (its busy timeout is 5 s), its reads
    do not (WAL)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def release() -> None:
        if holder.in_transaction:
            holder.rollback()
            holder.close()

    asyncio.get_running_loop().call_later(seconds, release)
    return release
