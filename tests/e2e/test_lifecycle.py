"""The bot's lifecycle with its Core: what runs while Discord is still there, and a SIGTERM mid-startup."""

from __future__ import annotations

import asyncio

from bot.core import Core
from bot.discord_bot import PixverseBot
from bot.dispatch.dispatcher import Dispatcher
from tests.e2e.conftest import start_bot


async def test_the_dispatcher_stops_while_discord_and_the_jobs_cog_are_still_there(settings, fake,
                                                                                restore_discord_endpoints,
                                                                                monkeypatch):
    """Its last notices (jobs that just ended) reach members through the jobs cog and Discord's REST
    session: both must still be there when it closes; the database is closed last."""
    seen: dict[str, object] = {}
    original = Dispatcher.close

    async def close(self, *args, **kwargs):
        seen["jobs cog loaded"] = bot.get_cog("PixVerse jobs") is not None
        seen["discord open"] = not bot.is_closed()
        seen["http api served"] = bot.core.http is None or bot.core.http.open_connections >= 0
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "close", close)
    bot, task = await start_bot(settings, fake)
    db = bot.core.db
    await bot.close()
    await asyncio.wait_for(task, timeout=10)
    assert seen == {"jobs cog loaded": True, "discord open": True, "http api served": True}
    assert db._closed


async def test_a_close_during_setup_hook_still_closes_the_core(settings, fake, restore_discord_endpoints,
                                                              monkeypatch):
    """SIGTERM while the Core opens (a long migration): close() finds no Core yet, so setup_hook must
    close it; left open, its database thread kept the process alive forever."""
    original_open = Core.open
    opened: list[Core] = []

    async def slow_open(*args, **kwargs):
        await asyncio.sleep(0.3)
        core = await original_open(*args, **kwargs)
        opened.append(core)
        return core

    monkeypatch.setattr(Core, "open", slow_open)
    bot = PixverseBot(settings)
    login = asyncio.create_task(bot.login(settings.discord_token.get_secret_value()))
    await asyncio.sleep(0.1)
    await bot.close()
    await asyncio.wait_for(login, timeout=10)
    assert len(opened) == 1 and opened[0].db._closed
    assert bot.extensions == {}
