"""Smoke test for tests/e2e/fake_discord.py: a real discord.py Bot against the fake.

Proves the fake is good enough for e2e tests: login, command sync, gateway
IDENTIFY/READY/GUILD_CREATE, INTERACTION_CREATE dispatch, immediate / deferred
responses, followups, autocomplete, DMs and a RESUME after op 7 RECONNECT.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yarl

from tests.e2e.fake_discord import FakeDiscord

with warnings.catch_warnings():
    # discord.player imports the stdlib `audioop`, deprecated since 3.11. Harmless here,
    # but under `pytest -W error` it would abort collection of this module.
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.ext import commands

TOKEN = "smoke-bot-token"
APP_ID = 900000000000000001
GUILD_ID = 200000000000000001
CHANNEL_ID = 200000000000000002
USER_ID = 300000000000000003
DM_CHANNEL_ID = 400000000000000004
FRUITS = ["apple", "apricot", "banana", "blueberry", "cherry"]


class SmokeBot(commands.Bot):
    """Minimal bot: /ping answers at once (ephemeral); /slow defers, then follows up."""

    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            # on_ready fires this long after the last GUILD_CREATE (default 2s).
            guild_ready_timeout=0.05,
        )
        # Gates the test uses to observe the deferred state before the followups exist.
        self.deferred = asyncio.Event()
        self.release_followup = asyncio.Event()
        self.release_second_followup = asyncio.Event()
        self.resumed = asyncio.Event()

    async def setup_hook(self) -> None:
        self.tree.add_command(ping)
        self.tree.add_command(slow)
        await self.tree.sync()

    async def on_resumed(self) -> None:
        self.resumed.set()


@app_commands.command(name="ping", description="Answer immediately")
async def ping(interaction: discord.Interaction) -> None:
    await interaction.response.send_message(
        f"pong user={interaction.user.id} channel={interaction.channel_id} guild={interaction.guild_id} "
        f"manage_guild={interaction.permissions.manage_guild}",
        ephemeral=True,
    )


@app_commands.command(name="slow", description="Defer, then follow up")
@app_commands.describe(fruit="A fruit", count="How many")
async def slow(interaction: discord.Interaction, fruit: str, count: int = 1) -> None:
    bot = interaction.client
    assert isinstance(bot, SmokeBot)
    await interaction.response.defer(ephemeral=True, thinking=True)
    bot.deferred.set()
    await bot.release_followup.wait()
    # No ephemeral=True here on purpose: the first followup replaces the ephemeral
    # "thinking" message, so it is ephemeral anyway.
    await interaction.followup.send(f"picked {count} x {fruit}")
    await bot.release_second_followup.wait()
    await interaction.followup.send("done", ephemeral=False)


@slow.autocomplete("fruit")
async def fruit_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=f.title(), value=f) for f in FRUITS if f.startswith(current.lower())]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(bot_token=TOKEN, application_id=APP_ID, bot_user_id=APP_ID)
    fake.add_guild(GUILD_ID, name="Smoke Guild", owner_id=USER_ID, channel_ids=[CHANNEL_ID])
    await fake.start()
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
        await fake.stop()


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[SmokeBot]:
    bot = SmokeBot()
    await bot.login(TOKEN)
    connect_task = asyncio.create_task(bot.connect())
    ready_task = asyncio.create_task(bot.wait_until_ready())
    try:
        await fake.wait_for_identify()
        done, _ = await asyncio.wait({connect_task, ready_task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if connect_task in done:
            connect_task.result()  # re-raise the connection error
            pytest.fail("bot.connect() returned before the bot was ready")
        assert ready_task in done, "bot did not become ready"
        yield bot
    finally:
        ready_task.cancel()
        await bot.close()
        await connect_task


# --------------------------------------------------------------------------- tests


async def test_login_sync_and_ready(fake: FakeDiscord, bot: SmokeBot) -> None:
    assert bot.user is not None and bot.user.id == APP_ID
    assert bot.application_id == APP_ID
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Smoke Guild"
    assert isinstance(guild.get_channel(CHANNEL_ID), discord.TextChannel)
    assert guild.me is not None

    # The command set the bot PUT, with ids assigned by the fake.
    assert fake.command_syncs == 1
    by_name = {c["name"]: c for c in fake.commands}
    assert set(by_name) == {"ping", "slow"}
    assert all(c["id"] and c["application_id"] == str(APP_ID) and c["version"] for c in fake.commands)
    assert by_name["ping"].get("options", []) == []
    opts = [(o["name"], o["type"], o.get("required", False), o.get("autocomplete", False)) for o in by_name["slow"]["options"]]
    assert opts == [("fruit", 3, True, True), ("count", 4, False, False)]

    # Gateway: discord.py asks for a compressed stream (we answer in text frames, which it
    # never decompresses) and identifies with the token.
    assert fake.gateway_queries[0]["v"] == "10" and fake.gateway_queries[0]["encoding"] == "json"
    assert fake.gateway_queries[0]["compress"] in ("zlib-stream", "zstd-stream")
    assert fake.identify_payloads[0]["token"] == TOKEN
    assert fake.identify_payloads[0]["intents"] == discord.Intents.default().value

    # Every bot-authenticated REST call carried "Bot <token>"; the expected login calls happened.
    bot_calls = [r for r in fake.requests if not r.path.startswith(("/interactions/", "/webhooks/"))]
    assert {(r.method, r.path) for r in bot_calls} >= {
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("PUT", f"/applications/{APP_ID}/commands"),
    }
    assert all(r.headers.get("Authorization") == f"Bot {TOKEN}" for r in bot_calls)
    assert all(r.status == 200 for r in bot_calls)
    assert fake.unknown_requests == []


async def test_immediate_ephemeral_reply(fake: FakeDiscord, bot: SmokeBot) -> None:
    result = await fake.invoke("ping", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID)
    assert result.callback_type == 4
    assert result.content == f"pong user={USER_ID} channel={CHANNEL_ID} guild={GUILD_ID} manage_guild=True"
    assert result.ephemeral
    assert result.callback_data is not None and result.callback_data["flags"] & 64
    assert [m["kind"] for m in result.messages] == ["callback"]
    # The interaction callback is authenticated by the token in the URL only.
    (callback,) = [r for r in fake.requests if r.path.endswith("/callback")]
    assert callback.path == f"/interactions/{result.interaction_id}/{result.token}/callback"
    assert callback.query.get("with_response") == "1"
    assert fake.unknown_requests == []


async def test_permissions_and_dm(fake: FakeDiscord, bot: SmokeBot) -> None:
    no_perms = await fake.invoke("ping", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, permissions=0)
    assert no_perms.content.endswith("manage_guild=False")

    dm = await fake.invoke("ping", guild_id=None, channel_id=DM_CHANNEL_ID, user_id=USER_ID)
    assert dm.content == f"pong user={USER_ID} channel={DM_CHANNEL_ID} guild=None manage_guild=False"
    assert dm.ephemeral
    assert fake.unknown_requests == []


async def test_deferred_then_followups(fake: FakeDiscord, bot: SmokeBot) -> None:
    payload = fake.make_interaction("slow", {"fruit": "banana", "count": 3}, guild_id=GUILD_ID, channel_id=CHANNEL_ID)
    assert payload["data"]["options"] == [
        {"name": "fruit", "type": 3, "value": "banana"},
        {"name": "count", "type": 4, "value": 3},
    ]
    interact = asyncio.create_task(fake.interact(payload))

    # The bot has deferred (ephemerally) but not followed up yet: interact() is still waiting.
    await asyncio.wait_for(bot.deferred.wait(), timeout=10)
    result = fake.result_for(payload)
    assert result.callback_type == 5
    assert result.callback_data == {"flags": 64}
    assert result.messages == []
    assert result.ephemeral
    assert not interact.done()

    bot.release_followup.set()
    assert await interact is result
    assert [m["kind"] for m in result.messages] == ["followup"]
    assert result.content == "picked 3 x banana"
    # The first followup replaced the "thinking" message, keeping the defer's ephemerality.
    assert result.message_ids == [result.original_message_id]
    assert result.ephemeral

    # A later followup (after interact() returned) is still recorded on the same result.
    bot.release_second_followup.set()
    messages = await fake.wait_for_messages(result, 2)
    assert [m["kind"] for m in messages] == ["followup", "followup"]
    assert result.content == "done"
    assert not result.ephemeral  # a new message, sent without the ephemeral flag
    followups = [r for r in fake.requests if r.method == "POST" and r.path == f"/webhooks/{APP_ID}/{result.token}"]
    assert len(followups) == 2 and all(r.query.get("wait") == "1" for r in followups)
    assert fake.unknown_requests == []


async def test_autocomplete(fake: FakeDiscord, bot: SmokeBot) -> None:
    choices = await fake.autocomplete("slow", {"fruit": "b"}, "fruit", guild_id=GUILD_ID, channel_id=CHANNEL_ID)
    assert choices == [{"name": "Banana", "value": "banana"}, {"name": "Blueberry", "value": "blueberry"}]

    # Focusing an option that was not typed yet sends it with an empty value.
    everything = await fake.autocomplete("slow", None, "fruit", guild_id=GUILD_ID, channel_id=CHANNEL_ID)
    assert [c["value"] for c in everything] == FRUITS
    assert fake.unknown_requests == []


async def test_resume_after_reconnect(fake: FakeDiscord, bot: SmokeBot) -> None:
    await fake.request_reconnect()
    await asyncio.wait_for(bot.resumed.wait(), timeout=10)
    assert fake.gateway_connections == 2
    assert len(fake.identify_payloads) == 1  # resumed, not re-identified
    result = await fake.invoke("ping", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID)
    assert result.content.startswith("pong")


async def test_unanswered_interaction_times_out_clearly(fake: FakeDiscord, bot: SmokeBot) -> None:
    payload = fake.make_interaction("slow", {"fruit": "apple"}, guild_id=GUILD_ID, channel_id=CHANNEL_ID)
    # /slow is gated, so it defers but never follows up: interact() must fail, saying what it saw.
    with pytest.raises(AssertionError, match=r"(?s)'slow'.*not answered within 0.5s.*callback: type=5.*/callback"):
        await fake.interact(payload, timeout=0.5)

    # The interaction is still tracked: late followups land on the same result.
    bot.release_followup.set()
    bot.release_second_followup.set()
    result = fake.result_for(payload)
    await fake.wait_for_messages(result, 2)
    assert [m["content"] for m in result.messages] == ["picked 1 x apple", "done"]


async def test_rest_fakes_without_bot(fake: FakeDiscord) -> None:
    fake.add_user_token("user-oauth-token", user_id=USER_ID, username="alice")
    async with aiohttp.ClientSession() as http:

        async def get(path: str, auth: str | None) -> tuple[int, str, object]:
            headers = {"Authorization": auth} if auth else {}
            async with http.get(fake.api_base_url + path, headers=headers) as resp:
                return resp.status, resp.headers["Content-Type"], await resp.json()

        assert await get("/users/@me", "user-oauth-token") == (
            200,
            "application/json",
            {
                "id": str(USER_ID),
                "username": "alice",
                "discriminator": "0",
                "global_name": "alice",
                "avatar": None,
                "public_flags": 0,
                "flags": 0,
                "locale": "en-US",
                "mfa_enabled": False,
            },
        )
        assert await get("/users/@me", "Bearer user-oauth-token") == (
            401,
            "application/json",
            {"message": "401: Unauthorized", "code": 0},
        )
        fake.users_me_failure = 502
        status, _, body = await get("/users/@me", "user-oauth-token")
        assert (status, body) == (502, {"message": "502: Bad Gateway", "code": 0})
        # ... but the bot's own login is unaffected.
        status, _, body = await get("/users/@me", f"Bot {TOKEN}")
        assert status == 200 and body["bot"] is True

        status, _, body = await get(f"/channels/{CHANNEL_ID}", f"Bot {TOKEN}")
        assert status == 200 and body["guild_id"] == str(GUILD_ID) and body["type"] == 0
        status, _, body = await get(f"/guilds/{GUILD_ID}", f"Bot {TOKEN}")
        assert status == 200 and body["name"] == "Smoke Guild"
        status, _, _ = await get(f"/guilds/{GUILD_ID}", None)
        assert status == 401

        assert await get("/channels/1/messages/2/threads", f"Bot {TOKEN}") == (
            404,
            "application/json",
            {"message": "Unknown route", "code": 0},
        )
    assert [(r.method, r.path) for r in fake.unknown_requests] == [("GET", "/channels/1/messages/2/threads")]
    assert fake.requests[0].headers["Authorization"] == "user-oauth-token"
