"""Smoke test for the fake Discord (tests/e2e/fake/, also importable as tests.e2e.fake_discord).

Proves the fake is good enough for e2e tests, mostly with a real discord.py Bot: login,
command sync, gateway IDENTIFY/READY/GUILD_CREATE, INTERACTION_CREATE dispatch, immediate /
deferred responses, followups, autocomplete, DMs and a RESUME after op 7 RECONNECT. Then the
bot's message writes: its channel message edits (MESSAGE_UPDATE, 403 / 404), Discord's
per-channel 429 and discord.py waiting it out on both its HTTP paths, Discord's message
limits on every route, ``message_versions`` with ``mentions``, and
``pixverse_progress_steps``.
"""

from __future__ import annotations

import asyncio
import time
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


# --------------------------------------------------------------------------- message writes: edits, limits, rate limit, versions

BOT_AUTH = {"Authorization": f"Bot {TOKEN}"}
OTHER_GUILD_ID = 200000000000000011
OTHER_CHANNEL_ID = 200000000000000012


async def call(http: aiohttp.ClientSession, method: str, url: str, body: object = None, headers: dict | None = None):
    """(status, headers, JSON body or None) of one request to the fake."""
    async with http.request(method, url, json=body, headers=headers or {}) as resp:
        raw = await resp.read()
        return resp.status, resp.headers, (await resp.json(content_type=None) if raw else None)


async def acknowledged_interaction(fake: FakeDiscord, http: aiohttp.ClientSession, callback: dict | None = None) -> dict:
    """An interaction the test answers itself over HTTP (no bot): registers /ping, returns the payload.

    With ``callback`` the interaction is also answered with it (expecting success).
    """
    if not fake.commands:
        status, _, _ = await call(http, "PUT", f"{fake.api_base_url}/applications/{APP_ID}/commands",
                                  [{"name": "ping", "description": "Answer immediately"}], BOT_AUTH)
        assert status == 200
    payload = fake.make_interaction("ping", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID)
    fake._register_interaction(payload)  # what send_event does, without a gateway session
    if callback is not None:
        status, _, _ = await call(http, "POST", f"{fake.api_base_url}/interactions/{payload['id']}/{payload['token']}/callback",
                                  callback)
        assert status == 204
    return payload


def at_limit_components() -> list[dict]:
    """5 rows x 5 buttons, labels of 80, unique custom_ids of 100, a link button and an emoji-only one."""
    rows = []
    for r in range(5):
        row = []
        for b in range(5):
            row.append({"type": 2, "style": 1, "label": f"{r}{b}".ljust(80, "l"), "custom_id": f"{r}{b}".ljust(100, "c")})
        rows.append({"type": 1, "components": row})
    rows[4]["components"][3] = {"type": 2, "style": 5, "label": "site", "url": "https://example.com"}
    rows[4]["components"][4] = {"type": 2, "style": 2, "emoji": {"name": "\N{TWISTED RIGHTWARDS ARROWS}"}, "custom_id": "shuffle"}
    return rows


def button(**extra: object) -> dict:
    return {"type": 2, "style": 1, "label": "B", "custom_id": "b", **extra}


def row(*buttons: dict) -> dict:
    return {"type": 1, "components": list(buttons)}


# Accepted: every limit reached exactly.
AT_LIMIT_BODIES = [
    {"content": "c" * 2000, "components": at_limit_components()},
    {"embeds": [{"title": "t" * 256, "description": "d" * 4096, "footer": {"text": "f" * 1000}, "author": {"name": "a" * 256},
                 "fields": [{"name": "n", "value": "v"}] * 25}] + [{"title": "t"}] * 9},  # 10 embeds, 5667 chars
    {"embeds": [{"footer": {"text": "f" * 2048}, "fields": [{"name": "n" * 256, "value": "v" * 1024}] * 3}]},
    {"embeds": [{"description": "d" * 4096}, {"title": "t" * 256, "footer": {"text": "f" * 1648}}]},  # exactly 6000 in all
]

# Rejected: (body, path of the error in `errors`, Discord's error code).
OVER_LIMIT_BODIES = [
    ({"content": "c" * 2001}, ["content"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"title": "t"}] * 11}, ["embeds"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"title": "t" * 257}]}, ["embeds", "0", "title"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"description": "d" * 4097}]}, ["embeds", "0", "description"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]}, ["embeds", "0", "fields"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"fields": [{"name": "", "value": "v"}]}]}, ["embeds", "0", "fields", "0", "name"], "BASE_TYPE_REQUIRED"),
    ({"embeds": [{"fields": [{"name": "n" * 257, "value": "v"}]}]}, ["embeds", "0", "fields", "0", "name"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"fields": [{"name": "n", "value": ""}]}]}, ["embeds", "0", "fields", "0", "value"], "BASE_TYPE_REQUIRED"),
    ({"embeds": [{"fields": [{"name": "n", "value": "v" * 1025}]}]}, ["embeds", "0", "fields", "0", "value"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"footer": {"text": "f" * 2049}}]}, ["embeds", "0", "footer", "text"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"author": {"name": "a" * 257}}]}, ["embeds", "0", "author", "name"], "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"description": "d" * 4096}, {"title": "t" * 256, "footer": {"text": "f" * 1649}}]}, ["embeds"], "MAX_EMBED_SIZE_EXCEEDED"),
    ({"components": [row(button(custom_id=f"r{i}")) for i in range(6)]}, ["components"], "BASE_TYPE_MAX_LENGTH"),
    ({"components": [row(*[button(custom_id=f"b{i}") for i in range(6)])]}, ["components", "0", "components"], "BASE_TYPE_BAD_LENGTH"),
    ({"components": [row(button(label="l" * 81))]}, ["components", "0", "components", "0", "label"], "BASE_TYPE_MAX_LENGTH"),
    ({"components": [row(button(custom_id="c" * 101))]}, ["components", "0", "components", "0", "custom_id"], "BASE_TYPE_MAX_LENGTH"),
    ({"components": [row(button(custom_id="same")), row(button(custom_id="same"))]},
     ["components", "1", "components", "0", "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED"),
    ({"components": [row(button(style=5, url="https://example.com"))]},
     ["components", "0", "components", "0", "custom_id"], "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID"),
    ({"components": [row({"type": 2, "style": 5, "label": "site"})]},
     ["components", "0", "components", "0", "url"], "BUTTON_COMPONENT_URL_REQUIRED"),
    ({"components": [row({"type": 2, "style": 1, "label": "B"})]},
     ["components", "0", "components", "0", "custom_id"], "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED"),
    ({"components": [row(button(url="https://example.com"))]},
     ["components", "0", "components", "0", "url"], "BUTTON_COMPONENT_NON_LINK_HAS_URL"),
    ({"components": [row({"type": 2, "style": 1, "custom_id": "b"})]},
     ["components", "0", "components", "0"], "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED"),
]


def error_codes(answer: dict, path: list[str]) -> list[str]:
    node = answer["errors"]
    for key in path:
        node = node[key]
    return [e["code"] for e in node["_errors"]]


async def test_bot_edits_its_channel_message(fake: FakeDiscord, bot: SmokeBot) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("draft")
    edited_event = asyncio.create_task(bot.wait_for("message_edit", timeout=10))
    edited = await channel.get_partial_message(sent.id).edit(
        content=f"final <@{USER_ID}>", allowed_mentions=discord.AllowedMentions(users=True)
    )
    before, after = await edited_event
    assert (before.content, after.content) == ("draft", f"final <@{USER_ID}>")
    assert edited.content == f"final <@{USER_ID}>" and edited.edited_at is not None
    assert [m.id for m in edited.mentions] == [USER_ID]

    stored = fake.find_channel_message(CHANNEL_ID, sent.id)
    assert stored is not None and stored["edited_timestamp"] is not None
    assert [m["id"] for m in stored["mentions"]] == [str(USER_ID)]
    assert [(t, m["id"], m["content"]) for t, m in fake.message_events] == [
        ("MESSAGE_CREATE", str(sent.id), "draft"),
        ("MESSAGE_UPDATE", str(sent.id), f"final <@{USER_ID}>"),
    ]
    versions = fake.message_versions(sent.id)
    assert [v["route"] for v in versions] == ["channel_post", "channel_edit"]
    assert versions[1]["body"]["content"] == f"final <@{USER_ID}>"
    assert versions[0]["message"]["content"] == "draft" and versions[0]["message"]["mentions"] == []
    assert fake.unknown_requests == []


async def test_channel_edit_refusals(fake: FakeDiscord) -> None:
    theirs = fake.channel_message_object(channel_id=CHANNEL_ID, author=fake.public_user_payload(USER_ID), content="mine")
    await fake._emit_message_create(theirs)
    base = f"{fake.api_base_url}/channels/{CHANNEL_ID}/messages"
    async with aiohttp.ClientSession() as http:
        status, _, answer = await call(http, "PATCH", f"{base}/{theirs['id']}", {"content": "hijacked"}, BOT_AUTH)
        assert (status, answer) == (403, {"message": "Cannot edit a message authored by another user", "code": 50005})
        status, _, answer = await call(http, "PATCH", f"{base}/123456789012345678", {"content": "x"}, BOT_AUTH)
        assert (status, answer) == (404, {"message": "Unknown Message", "code": 10008})
        status, _, _ = await call(http, "PATCH", f"{base}/{theirs['id']}", {"content": "x"})
        assert status == 401
        # The bot's own message: content and SUPPRESS_EMBEDS change; other flags do not.
        status, _, mine = await call(http, "POST", base, {"content": "hi", "embeds": [{"title": "t"}]}, BOT_AUTH)
        assert status == 200
        status, _, edited = await call(http, "PATCH", f"{base}/{mine['id']}", {"content": "hello", "flags": 4 | 64}, BOT_AUTH)
        assert status == 200 and (edited["content"], edited["flags"], edited["embeds"]) == ("hello", 4, [{"title": "t"}])
        status, _, edited = await call(http, "PATCH", f"{base}/{mine['id']}", {"embeds": None}, BOT_AUTH)
        assert status == 200 and (edited["content"], edited["embeds"]) == ("hello", [])
    assert theirs["content"] == "mine" and theirs["edited_timestamp"] is None
    assert [r.status for r in fake.requests] == [403, 404, 401, 200, 200, 200]
    assert [t for t, _ in fake.message_events] == ["MESSAGE_CREATE", "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_UPDATE"]


async def test_rate_limit_answers_like_discord(fake: FakeDiscord) -> None:
    fake.add_guild(OTHER_GUILD_ID, channel_ids=[OTHER_CHANNEL_ID])
    base = f"{fake.api_base_url}/channels/{CHANNEL_ID}/messages"
    async with aiohttp.ClientSession() as http:
        # Off by default.
        for _ in range(3):
            assert (await call(http, "POST", base, {"content": "free"}, BOT_AUTH))[0] == 200
        fake.message_rate_limit = (2, 0.5)
        started = time.monotonic()
        status, _, first = await call(http, "POST", base, {"content": "one"}, BOT_AUTH)
        assert status == 200
        status, headers, _ = await call(http, "PATCH", f"{base}/{first['id']}", {"content": "two"}, BOT_AUTH)
        assert status == 200 and not any(h.lower().startswith("x-ratelimit") for h in headers)
        status, headers, answer = await call(http, "POST", base, {"content": "three"}, BOT_AUTH)
        assert status == 429
        assert set(answer) == {"message", "retry_after", "global", "code"}
        assert (answer["message"], answer["global"], answer["code"]) == ("You are being rate limited.", False, 0)
        assert 0 < answer["retry_after"] <= 0.5
        assert headers["Retry-After"] == "1"
        assert headers["X-RateLimit-Limit"] == "2" and headers["X-RateLimit-Remaining"] == "0"
        assert float(headers["X-RateLimit-Reset-After"]) == answer["retry_after"]
        assert headers["X-RateLimit-Scope"] == "user" and headers["Via"] == "1.1 google"
        assert headers["Content-Type"] == "application/json"
        # Another channel has its own window.
        other = f"{fake.api_base_url}/channels/{OTHER_CHANNEL_ID}/messages"
        assert (await call(http, "POST", other, {"content": "elsewhere"}, BOT_AUTH))[0] == 200
        # The 429 did not count, and the window ends retry_after after the answer.
        await asyncio.sleep(answer["retry_after"])
        status, _, _ = await call(http, "POST", base, {"content": "three again"}, BOT_AUTH)
        assert status == 200
    assert [(c, p) for c, p, _ in fake.rate_limited] == [(str(CHANNEL_ID), f"/channels/{CHANNEL_ID}/messages")]
    assert started <= fake.rate_limited[0][2] <= time.monotonic()
    assert [m["content"] for m in fake.channel_messages[CHANNEL_ID]] == ["free"] * 3 + ["two", "three again"]


async def test_discord_py_waits_out_429s(fake: FakeDiscord, bot: SmokeBot) -> None:
    """Both of discord.py's HTTP paths retry after retry_after: the bot client and the webhook adapter."""
    ping_result = await fake.invoke("ping", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID)
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    fake.message_rate_limit = (1, 0.4)
    sent = await channel.send("one")  # opens the window and uses it up

    # Bot HTTP client: PATCH /channels/{C}/messages/{M} gets a 429, waits, succeeds.
    edited = await channel.get_partial_message(sent.id).edit(content="two")
    assert edited.content == "two"

    # Webhook adapter (what Interaction.edit_original_response uses), same channel's window.
    webhook = discord.Webhook.partial(APP_ID, ping_result.token, client=bot)
    original = int(ping_result.original_message_id or 0)
    edited_webhook_message = await webhook.edit_message(original, content="pong, edited")
    assert edited_webhook_message.content == "pong, edited"
    assert ping_result.content == "pong, edited"

    channel_path = f"/channels/{CHANNEL_ID}/messages/{sent.id}"
    webhook_path = f"/webhooks/{APP_ID}/{ping_result.token}/messages/{original}"
    assert [(c, p) for c, p, _ in fake.rate_limited] == [(str(CHANNEL_ID), channel_path), (str(CHANNEL_ID), webhook_path)]
    # Each retry landed in a new window: at least 0.4s after the write that opened the previous one
    # (the post of "one", then the channel edit's successful retry).
    (post,) = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
    window_start = post
    for path in (channel_path, webhook_path):
        tries = [r for r in fake.requests if r.method == "PATCH" and r.path == path]
        assert [r.status for r in tries] == [429, 200]
        assert tries[1].at - window_start.at >= 0.35
        window_start = tries[1]
    assert fake.unknown_requests == []


@pytest.mark.parametrize("body", AT_LIMIT_BODIES, ids=["content+components", "10 embeds", "fields", "6000 total"])
async def test_message_at_the_limits_is_accepted(fake: FakeDiscord, body: dict) -> None:
    async with aiohttp.ClientSession() as http:
        status, _, msg = await call(http, "POST", f"{fake.api_base_url}/channels/{CHANNEL_ID}/messages", body, BOT_AUTH)
    assert status == 200, msg
    assert fake.find_channel_message(CHANNEL_ID, msg["id"]) is not None


@pytest.mark.parametrize(("body", "path", "code"), OVER_LIMIT_BODIES, ids=[".".join(p) + ":" + c for _, p, c in OVER_LIMIT_BODIES])
async def test_message_over_a_limit_is_refused(fake: FakeDiscord, body: dict, path: list[str], code: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, _, answer = await call(http, "POST", f"{fake.api_base_url}/channels/{CHANNEL_ID}/messages", body, BOT_AUTH)
    assert (status, answer["code"], answer["message"]) == (400, 50035, "Invalid Form Body")
    assert code in error_codes(answer, path), answer
    assert fake.channel_messages.get(CHANNEL_ID, []) == [] and fake.message_events == []
    assert fake.requests[-1].status == 400


async def test_limits_on_every_message_route(fake: FakeDiscord) -> None:
    api = fake.api_base_url
    too_long = {"content": "c" * 2001}
    async with aiohttp.ClientSession() as http:
        # Interaction callback type 4: refused, so the interaction stays unacknowledged.
        payload = await acknowledged_interaction(fake, http)
        callback = f"{api}/interactions/{payload['id']}/{payload['token']}/callback"
        status, _, answer = await call(http, "POST", callback, {"type": 4, "data": too_long})
        assert status == 400 and error_codes(answer, ["data", "content"]) == ["BASE_TYPE_MAX_LENGTH"]
        result = fake.result_for(payload)
        assert (result.callback_type, result.messages, result.original_message_id) == (None, [], None)
        assert (await call(http, "POST", callback, {"type": 4, "data": AT_LIMIT_BODIES[0]}))[0] == 204

        # Followup.
        webhook = f"{api}/webhooks/{APP_ID}/{payload['token']}"
        status, _, answer = await call(http, "POST", webhook + "?wait=1", {"embeds": [{"title": "t"}] * 11})
        assert status == 400 and error_codes(answer, ["embeds"]) == ["BASE_TYPE_MAX_LENGTH"]
        assert len(result.messages) == 1
        assert (await call(http, "POST", webhook + "?wait=1", AT_LIMIT_BODIES[1]))[0] == 200

        # Webhook message edit.
        duplicated = {"components": [row(button(custom_id="same"), button(custom_id="same"))]}
        status, _, answer = await call(http, "PATCH", f"{webhook}/messages/@original", duplicated)
        assert status == 400 and "COMPONENT_CUSTOM_ID_DUPLICATED" in error_codes(answer, ["components", "0", "components", "1", "custom_id"])
        assert result.message_objects[result.original_message_id or ""]["content"] == "c" * 2000
        assert len(result.messages) == 2
        assert (await call(http, "PATCH", f"{webhook}/messages/@original", AT_LIMIT_BODIES[3]))[0] == 200

        # Interaction callback type 7.
        payload_7 = await acknowledged_interaction(fake, http)
        callback_7 = f"{api}/interactions/{payload_7['id']}/{payload_7['token']}/callback"
        status, _, answer = await call(http, "POST", callback_7, {"type": 7, "data": {"embeds": [{"title": "t" * 257}]}})
        assert status == 400 and error_codes(answer, ["data", "embeds", "0", "title"]) == ["BASE_TYPE_MAX_LENGTH"]
        assert fake.result_for(payload_7).callback_type is None
        assert (await call(http, "POST", callback_7, {"type": 7, "data": {"content": "updated"}}))[0] == 204

        # Channel message PATCH.
        channel = f"{api}/channels/{CHANNEL_ID}/messages"
        status, _, msg = await call(http, "POST", channel, {"content": "keep"}, BOT_AUTH)
        assert status == 200
        status, _, answer = await call(http, "PATCH", f"{channel}/{msg['id']}", {"content": "x", **too_long}, BOT_AUTH)
        assert status == 400 and error_codes(answer, ["content"]) == ["BASE_TYPE_MAX_LENGTH"]
        assert fake.find_channel_message(CHANNEL_ID, msg["id"])["content"] == "keep"  # type: ignore[index]
        assert [t for t, _ in fake.message_events] == ["MESSAGE_CREATE"]
        assert (await call(http, "PATCH", f"{channel}/{msg['id']}", AT_LIMIT_BODIES[0], BOT_AUTH))[0] == 200
    assert [r.status for r in fake.requests if r.status == 400] == [400] * 5
    assert [len(fake.message_versions(i)) for i in (result.original_message_id, msg["id"])] == [2, 2]


async def test_message_versions_and_mentions(fake: FakeDiscord) -> None:
    api = fake.api_base_url
    other_user = USER_ID + 1
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        payload = await acknowledged_interaction(fake, http, {"type": 5, "data": {"flags": 64}})
        result = fake.result_for(payload)
        webhook = f"{api}/webhooks/{APP_ID}/{payload['token']}"
        # The first followup replaces the thinking message; its mentions obey allowed_mentions.
        followup = {"content": f"hi <@{USER_ID}> <@{other_user}>", "allowed_mentions": {"parse": [], "users": [str(other_user)]}}
        status, _, _ = await call(http, "POST", webhook + "?wait=1", followup)
        assert status == 200
        # Refused writes leave no version.
        assert (await call(http, "PATCH", f"{webhook}/messages/@original", {"content": "c" * 2001}))[0] == 400
        edit = {"content": f"done <@{USER_ID}> @everyone"}  # no allowed_mentions: everything parses
        assert (await call(http, "PATCH", f"{webhook}/messages/@original", edit))[0] == 200
        status, _, second = await call(http, "POST", webhook + "?wait=1", {"content": "more", "flags": 64})
        assert status == 200

        channel = f"{api}/channels/{CHANNEL_ID}/messages"
        status, _, posted = await call(http, "POST", channel, {"content": f"<@{USER_ID}>", "allowed_mentions": {"parse": []}}, BOT_AUTH)
        assert status == 200 and posted["mentions"] == []
        status, _, _ = await call(http, "PATCH", f"{channel}/{posted['id']}", {"content": f"<@{USER_ID}> again"}, BOT_AUTH)
        assert status == 200

    original = result.original_message_id
    versions = fake.message_versions(str(original))
    assert [v["route"] for v in versions] == ["callback", "followup", "webhook_edit"]
    assert [v["body"] for v in versions] == [{"flags": 64}, followup, edit]
    assert started <= versions[0]["at"] <= versions[1]["at"] <= versions[2]["at"] <= time.monotonic()
    assert all(v["message"]["id"] == original for v in versions)
    assert versions[0]["message"]["flags"] == 64 | 128 and versions[0]["message"]["content"] == ""
    assert [[u["id"] for u in v["message"]["mentions"]] for v in versions] == [[], [str(other_user)], [str(USER_ID)]]
    assert [v["message"]["mention_everyone"] for v in versions] == [False, False, True]
    assert versions[2]["message"]["edited_timestamp"] is not None
    # Copies: changing them changes nothing in the fake.
    versions[2]["message"]["content"] = "tampered"
    assert fake.message_versions(original)[2]["message"]["content"] == edit["content"]
    assert result.message_objects[original or ""]["content"] == edit["content"]

    assert [v["route"] for v in fake.message_versions(second["id"])] == ["followup"]
    channel_versions = fake.message_versions(int(posted["id"]))
    assert [v["route"] for v in channel_versions] == ["channel_post", "channel_edit"]
    assert [[u["id"] for u in v["message"]["mentions"]] for v in channel_versions] == [[], [str(USER_ID)]]
    assert fake.message_versions("123") == []
    # RecordedRequest.at: when each request arrived, in order.
    ats = [r.at for r in fake.requests]
    assert ats == sorted(ats) and started <= ats[0]


async def test_pixverse_progress_steps(fake: FakeDiscord) -> None:
    account_token, account_id = "account-token", USER_ID + 7
    fake.add_user_token(account_token, user_id=account_id, username="account")
    fake.add_pixverse(step_delay=0.01)
    cmd = fake.pixverse_commands["create"]

    async def create(prompt: str) -> None:
        body = {
            "type": 2, "application_id": cmd["application_id"], "guild_id": str(GUILD_ID), "channel_id": str(CHANNEL_ID),
            "session_id": "0" * 32, "nonce": fake.snowflake(),
            "data": {"version": cmd["version"], "id": cmd["id"], "name": "create", "type": 1, "application_command": cmd,
                     "attachments": [], "options": [{"type": 3, "name": "prompt", "value": prompt},
                                                    {"type": 3, "name": "style", "value": "Anime"}]},
        }
        async with aiohttp.ClientSession() as http:
            status, _, _ = await call(http, "POST", f"{fake.api_base_url}/interactions", body, {"Authorization": account_token})
        assert status == 204
        await fake.wait_for_pixverse_idle()

    def contents() -> list[tuple[str, str]]:
        events = [(t, m["content"]) for t, m in fake.message_events]
        fake.message_events.clear()
        return events

    head = f"<@{account_id}> (prompt: {{}} style: Anime aspect-ratio: 16:9)"
    assert fake.pixverse_progress_steps == [37]
    await create("default")
    h = head.format("default")
    assert contents() == [("MESSAGE_CREATE", f"{h} (Waiting to start)"), ("MESSAGE_UPDATE", f"{h} (37%)"),
                          ("MESSAGE_CREATE", f"{h} Author: <@{account_id}>")]

    fake.pixverse_progress_steps = [5, 50, 99]
    await create("steps")
    h = head.format("steps")
    assert contents() == [("MESSAGE_CREATE", f"{h} (Waiting to start)"), ("MESSAGE_UPDATE", f"{h} (5%)"),
                          ("MESSAGE_UPDATE", f"{h} (50%)"), ("MESSAGE_UPDATE", f"{h} (99%)"),
                          ("MESSAGE_CREATE", f"{h} Author: <@{account_id}>")]
    waiting = fake.find_channel_message(CHANNEL_ID, fake.pixverse_jobs[-1]["message_ids"][0])
    assert waiting is not None and waiting["content"] == f"{h} (99%)"

    fake.pixverse_progress_steps = []
    await create("none")
    h = head.format("none")
    assert contents() == [("MESSAGE_CREATE", f"{h} (Waiting to start)"), ("MESSAGE_CREATE", f"{h} Author: <@{account_id}>")]
    assert [j["state"] for j in fake.pixverse_jobs] == ["completed"] * 3
