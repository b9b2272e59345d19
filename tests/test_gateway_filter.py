"""bot/gateway_filter.py leans on discord.py's private parser table: these tests fail loudly when a
discord.py release changes what it relies on (then see the module's docstring), and check that
it falls back to discord.py's normal path rather than break.

What it relies on, each checked here:
* ``client._connection.parsers`` maps MESSAGE_CREATE / MESSAGE_UPDATE to the state's own
  ``parse_message_create`` / ``parse_message_update`` (``parser_table_problem`` is None);
* every websocket calls through *that* dict with the event's ``d`` (``DiscordWebSocket.from_client``
  and ``received_message``), checked end to end: a real ``discord.Client`` on the fake Discord's
  gateway, where a dropped message must never reach ``on_message`` / ``on_raw_message_edit`` and
  a kept one must, with discord.py's own parsing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import warnings
from collections.abc import AsyncIterator

import pytest
import yarl

from bot.gateway_filter import EVENTS, MessageGate, parser_table_problem
from tests.e2e.fake_discord import FakeDiscord

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord
    from discord.ext import commands
    from discord.gateway import DiscordWebSocket

TOKEN = "gate-bot-token"
APP_ID = 900000000000000001
GUILD_ID = 210000000000000001
KEPT_CHANNEL = 210000000000000002
DROPPED_CHANNEL = 210000000000000003
USER_ID = 310000000000000003


def intents() -> discord.Intents:
    value = discord.Intents.none()
    value.guilds = value.guild_messages = value.message_content = True
    return value


def keep_one_channel(data: dict) -> bool:
    return data.get("channel_id") == str(KEPT_CHANNEL)


@pytest.mark.parametrize("make", [
    lambda: discord.Client(intents=intents()),
    lambda: commands.AutoShardedBot(command_prefix=commands.when_mentioned, intents=intents(), help_command=None),
], ids=["Client", "AutoShardedBot"])
def test_discord_py_parser_table_is_as_the_gate_expects(make):
    client = make()
    assert parser_table_problem(client) is None, (
        f"discord.py {discord.__version__} changed its parser table: {parser_table_problem(client)}")
    gate = MessageGate(keep_one_channel)
    assert gate.install(client) is True
    parsers = client._connection.parsers
    assert all(getattr(parsers[event], "message_gate", None) is gate for event in EVENTS)
    gate.uninstall()
    assert parser_table_problem(client) is None  # discord.py's own methods are back
    assert parsers["MESSAGE_CREATE"].__func__ is type(client._connection).parse_message_create


def test_every_websocket_calls_the_state_s_parser_table():
    """The two lines of discord/gateway.py the gate depends on, as written in the installed release."""
    from_client = inspect.getsource(DiscordWebSocket.from_client)
    received = inspect.getsource(DiscordWebSocket.received_message)
    assert "ws._discord_parsers = client._connection.parsers" in from_client, (
        f"discord.py {discord.__version__}: websockets no longer share ConnectionState.parsers")
    assert "self._discord_parsers[event]" in received and "func(data)" in received, (
        f"discord.py {discord.__version__}: received_message no longer calls parsers[event](data)")


def test_an_unexpected_parser_table_leaves_discord_py_alone(caplog):
    client = discord.Client(intents=intents())
    client._connection.parsers["MESSAGE_CREATE"] = lambda data: None  # as if discord.py had changed
    before = dict(client._connection.parsers)
    with caplog.at_level(logging.WARNING, logger="bot.gateway_filter"):
        assert MessageGate(keep_one_channel).install(client) is False
    assert client._connection.parsers == before
    assert "full path" in caplog.text and "MESSAGE_CREATE" in caplog.text
    assert parser_table_problem(object()) == "the client has no _connection"


def test_a_failing_filter_lets_the_message_through(caplog):
    parsed = []
    gate = MessageGate(lambda data: 1 / 0)
    parse = gate._gate(parsed.append)  # in place of discord.py's parser
    with caplog.at_level(logging.ERROR, logger="bot.gateway_filter"):
        parse({"id": "1"})
    assert parsed == [{"id": "1"}] and (gate.passed, gate.dropped) == (1, 0)
    assert "goes through" in caplog.text


# --- end to end: a real discord.Client on the fake gateway --------------------------------------


class Recorder(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=intents(), guild_ready_timeout=0.05, max_messages=None)
        self.created: list[str] = []
        self.edited: list[str] = []
        self.changed = asyncio.Event()

    async def on_message(self, message: discord.Message) -> None:
        self.created.append(f"{message.channel.id}:{message.content}")
        self.changed.set()

    async def on_raw_message_edit(self, event: discord.RawMessageUpdateEvent) -> None:
        self.edited.append(f"{event.channel_id}:{event.data['content']}")
        self.changed.set()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(bot_token=TOKEN, application_id=APP_ID, bot_user_id=APP_ID)
    server.add_guild(GUILD_ID, name="Gate", owner_id=USER_ID, channel_ids=[KEPT_CHANNEL, DROPPED_CHANNEL])
    server.add_user_token("user-token", user_id=USER_ID, username="member")
    await server.start()
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = server.api_base_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
    try:
        yield server
    finally:
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = base, gateway
        await server.stop()


async def test_dropped_messages_never_reach_discord_py_and_kept_ones_do(fake: FakeDiscord):
    client = Recorder()
    gate = MessageGate(keep_one_channel)
    await client.login(TOKEN)
    assert gate.install(client), "the gate must install on the discord.py release the bot ships with"
    task = asyncio.create_task(client.connect(reconnect=False))
    try:
        await asyncio.wait_for(client.wait_until_ready(), timeout=10)
        author = fake.public_user_payload(USER_ID)
        messages = {}
        for channel in (DROPPED_CHANNEL, KEPT_CHANNEL):  # the dropped one first: order proves it
            messages[channel] = fake.channel_message_object(channel_id=channel, author=author, content=f"new {channel}")
            await fake._emit_message_create(messages[channel])
        for channel in (DROPPED_CHANNEL, KEPT_CHANNEL):
            await fake._edit_channel_message(messages[channel], content=f"edited {channel}")
        async with asyncio.timeout(10):
            while len(client.edited) < 1:
                client.changed.clear()
                await client.changed.wait()
        await asyncio.sleep(0.05)  # anything dropped late would show now
        assert client.created == [f"{KEPT_CHANNEL}:new {KEPT_CHANNEL}"]
        assert client.edited == [f"{KEPT_CHANNEL}:edited {KEPT_CHANNEL}"]
        assert (gate.dropped, gate.passed) == (2, 2)
        # Uninstalled, discord.py parses every message again.
        gate.uninstall()
        await fake._edit_channel_message(messages[DROPPED_CHANNEL], content="seen")
        async with asyncio.timeout(10):
            while len(client.edited) < 2:
                client.changed.clear()
                await client.changed.wait()
        assert client.edited[-1] == f"{DROPPED_CHANNEL}:seen"
    finally:
        await client.close()
        await asyncio.wait_for(task, timeout=10)
