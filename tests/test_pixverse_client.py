"""The user-token client for PixVerse, against a local stand-in for Discord's user API."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import traceback
from typing import Any

import pytest
from aiohttp import web

from bot.pixverse.client import (
    AccountRejected,
    CommandUnavailable,
    DiscordUnavailable,
    DiscordUserClient,
    PixverseClientError,
)

# Not token-shaped and never registered with the log redactor (installed by conftest), so
# the no-leak assertions test this module, not the redactor.
TOKEN = "plain-user-token-AAAA-0123456789-secret"
TOKEN_2 = "plain-user-token-BBBB-9876543210-secret"
GUILD = "111111111111111111"
CHANNEL = "333333333333333333"
MESSAGE = "900000000000000001"
PIXVERSE_ID = "1000000000000000001"
DECOY_ID = "2000000000000000002"

CREATE = {
    "id": "5000000000000000001",
    "application_id": PIXVERSE_ID,
    "version": "6000000000000000001",
    "name": "create",
    "type": 1,
    "description": "Create 4 videos",
    "options": [
        {"type": 3, "name": "prompt", "description": "p", "required": True},
        {"type": 3, "name": "style", "description": "s", "required": True},
        {"type": 3, "name": "aspect_ratio", "description": "a"},
        {"type": 3, "name": "negative_prompt", "description": "n"},
        {"type": 3, "name": "character", "description": "c"},
    ],
}
CREATE_SINGLE = {
    "id": "5000000000000000002",
    "application_id": PIXVERSE_ID,
    "version": "6000000000000000002",
    "name": "create_single",
    "type": 1,
    "options": [
        {"type": 3, "name": "prompt", "required": True},
        {"type": 3, "name": "style", "required": True},
        {"type": 4, "name": "seed"},
        {"type": 5, "name": "hd"},
        {"type": 10, "name": "strength"},
    ],
}
DECOY_CREATE = {
    "id": "5000000000000000009",
    "application_id": DECOY_ID,
    "version": "6000000000000000009",
    "name": "create",
    "type": 1,
    "options": [{"type": 3, "name": "prompt", "required": True}],
}


def index(*commands: dict, apps: list[dict] | None = None) -> dict:
    if apps is None:
        apps = [{"id": DECOY_ID, "name": "Decoy"}, {"id": PIXVERSE_ID, "name": "PixVerse"}]
    return {"applications": apps, "application_commands": list(commands)}


class FakeTime:
    """The injected clock and sleep: sleeping advances the clock and records the wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class MaxRandom(random.Random):
    def random(self) -> float:
        return 0.9999999999


class ZeroRandom(random.Random):
    def random(self) -> float:
        return 0.0


class Stub:
    """Records every request; answers from per-route scripts, else the defaults."""

    def __init__(self, ftime: FakeTime) -> None:
        self.ftime = ftime
        self.requests: list[dict[str, Any]] = []
        self.index_body: dict = index(DECOY_CREATE, CREATE, CREATE_SINGLE)
        # Scripted answers, consumed first: (status, json body or None, headers)
        self.script: dict[str, list[tuple[int, Any, dict[str, str]]]] = {"index": [], "interactions": []}
        self.hold: dict[str, asyncio.Event] = {}  # Authorization -> event the answer waits for
        self.arrived = asyncio.Event()
        self.base = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == kind]

    async def _record(self, request: web.Request, kind: str) -> None:
        raw = await request.read()
        self.requests.append(
            {
                "kind": kind,
                "method": request.method,
                "path": request.path,
                "authorization": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "json": (await request.json()) if raw else None,
                "at": self.ftime.now,
            }
        )
        self.arrived.set()
        event = self.hold.get(request.headers.get("Authorization", ""))
        if event is not None:
            await event.wait()

    def _scripted(self, kind: str) -> web.Response | None:
        if not self.script[kind]:
            return None
        status, body, headers = self.script[kind].pop(0)
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async def command_index(self, request: web.Request) -> web.Response:
        await self._record(request, "index")
        return self._scripted("index") or web.json_response(self.index_body)

    async def interactions(self, request: web.Request) -> web.Response:
        await self._record(request, "interactions")
        return self._scripted("interactions") or web.Response(status=204)


@pytest.fixture
def ftime() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def stub(ftime):
    state = Stub(ftime)
    app = web.Application()
    app.router.add_get("/api/v10/guilds/{guild}/application-command-index", state.command_index)
    app.router.add_post("/api/v10/interactions", state.interactions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state.base = f"http://127.0.0.1:{port}/api/v10/"  # trailing slash on purpose
    yield state
    for event in state.hold.values():
        event.set()
    await runner.cleanup()


@pytest.fixture
async def make_client(stub, ftime):
    clients: list[DiscordUserClient] = []

    def make(**kwargs: Any) -> DiscordUserClient:
        kwargs.setdefault("submit_interval", 0)
        kwargs.setdefault("timeout", 2)
        kwargs.setdefault("sleep", ftime.sleep)
        kwargs.setdefault("clock", ftime.clock)
        kwargs.setdefault("rng", ZeroRandom())
        client = DiscordUserClient(kwargs.pop("base", stub.base), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def assert_no_token(exc: BaseException, *tokens: str) -> None:
    text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
    for token in tokens or (TOKEN, TOKEN_2):
        assert token not in text


# ---------------------------------------------------------------- type 2: the body


async def test_run_command_sends_the_exact_type_2_body(stub, make_client):
    client = make_client()
    before = int(time.time() * 1000)
    nonce = await client.run_command(
        TOKEN,
        guild_id=GUILD,
        channel_id=CHANNEL,
        name="create",
        options={"prompt": "a red fox", "style": "Anime", "aspect_ratio": "16:9", "character": None},
    )
    after = int(time.time() * 1000)

    get, post = stub.requests
    assert (get["method"], get["path"]) == ("GET", f"/api/v10/guilds/{GUILD}/application-command-index")
    assert (post["method"], post["path"]) == ("POST", "/api/v10/interactions")
    for request in (get, post):
        assert request["authorization"] == TOKEN  # raw: no "Bot " or "Bearer "
        assert request["content_type"] == "application/json"

    body = post["json"]
    assert set(body) == {"type", "application_id", "guild_id", "channel_id", "session_id", "nonce", "data"}
    assert body["type"] == 2
    assert body["application_id"] == PIXVERSE_ID
    assert body["guild_id"] == GUILD
    assert body["channel_id"] == CHANNEL
    assert re.fullmatch(r"[0-9a-f]{32}", body["session_id"])
    assert body["nonce"] == nonce
    assert re.fullmatch(r"[0-9]+", nonce)
    assert before <= (int(nonce) >> 22) + 1420070400000 <= after

    data = body["data"]
    assert set(data) == {"version", "id", "name", "type", "options", "application_command", "attachments"}
    assert data["version"] == CREATE["version"]
    assert data["id"] == CREATE["id"]
    assert data["name"] == "create"
    assert data["type"] == 1
    assert data["options"] == [
        {"type": 3, "name": "prompt", "value": "a red fox"},
        {"type": 3, "name": "style", "value": "Anime"},
        {"type": 3, "name": "aspect_ratio", "value": "16:9"},
    ]
    assert data["application_command"] == CREATE
    assert data["attachments"] == []


async def test_session_id_and_nonce_are_new_for_each_request(stub, make_client):
    client = make_client()
    nonces = [
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime"})
        for _ in range(3)
    ]
    posts = stub.of("interactions")
    assert len(set(nonces)) == 3
    assert [p["json"]["nonce"] for p in posts] == nonces
    assert len({p["json"]["session_id"] for p in posts}) == 3


async def test_options_are_typed_from_the_command_definitions(stub, make_client):
    client = make_client()
    await client.run_command(
        TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create_single",
        options={"prompt": "p", "style": "3D Animation", "seed": "42", "hd": True, "strength": 0.5},
    )
    await client.run_command(
        TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create_single",
        options={"prompt": 12, "style": "Realistic", "seed": 7, "strength": 2},
    )
    first, second = (p["json"]["data"]["options"] for p in stub.of("interactions"))
    assert first == [
        {"type": 3, "name": "prompt", "value": "p"},
        {"type": 3, "name": "style", "value": "3D Animation"},
        {"type": 4, "name": "seed", "value": 42},
        {"type": 5, "name": "hd", "value": True},
        {"type": 10, "name": "strength", "value": 0.5},
    ]
    assert second == [
        {"type": 3, "name": "prompt", "value": "12"},
        {"type": 3, "name": "style", "value": "Realistic"},
        {"type": 4, "name": "seed", "value": 7},
        {"type": 10, "name": "strength", "value": 2},
    ]


async def test_unknown_option_is_command_unavailable_and_nothing_is_sent(stub, make_client):
    client = make_client()
    with pytest.raises(CommandUnavailable) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime", "seed": 3})
    assert "no option 'seed'" in str(info.value)
    assert "prompt, style, aspect_ratio" in str(info.value)
    assert stub.of("interactions") == []


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"prompt": "p", "style": "Anime", "seed": "abc"}, "must be an integer"),
        ({"prompt": "p", "style": "Anime", "seed": True}, "must be an integer"),
        ({"prompt": "p", "style": "Anime", "hd": "yes"}, "must be true or false"),
        ({"prompt": "p", "style": "Anime", "strength": "x"}, "must be a number"),
        ({"prompt": "p"}, "needs the option(s) style"),
    ],
)
async def test_bad_option_values_are_refused_before_sending(stub, make_client, options, fragment):
    client = make_client()
    with pytest.raises(PixverseClientError) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create_single", options=options)
    assert fragment in str(info.value)
    assert stub.of("interactions") == []


# ---------------------------------------------------------------- type 3


async def test_press_button_sends_the_exact_type_3_body(stub, make_client):
    client = make_client(application_id=PIXVERSE_ID)
    nonce = await client.press_button(
        TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0, custom_id="opaque::U1::abc"
    )
    assert stub.of("index") == []  # the id came from the setting
    (post,) = stub.requests
    assert (post["method"], post["path"], post["authorization"], post["content_type"]) == (
        "POST", "/api/v10/interactions", TOKEN, "application/json",
    )
    body = post["json"]
    assert set(body) == {
        "type", "application_id", "guild_id", "channel_id", "message_id", "message_flags", "session_id", "nonce", "data",
    }
    assert body["type"] == 3
    assert body["application_id"] == PIXVERSE_ID
    assert body["guild_id"] == GUILD
    assert body["channel_id"] == CHANNEL
    assert body["message_id"] == MESSAGE
    assert body["message_flags"] == 0
    assert re.fullmatch(r"[0-9a-f]{32}", body["session_id"])
    assert body["nonce"] == nonce
    assert body["data"] == {"component_type": 2, "custom_id": "opaque::U1::abc"}


async def test_press_button_finds_pixverse_by_name_or_takes_the_given_id(stub, make_client):
    client = make_client()
    await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                              message_flags=64, custom_id="c1")
    await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                              message_flags=64, custom_id="c2", application_id="42")
    assert len(stub.of("index")) == 1
    first, second = (p["json"] for p in stub.of("interactions"))
    assert (first["application_id"], first["message_flags"]) == (PIXVERSE_ID, 64)
    assert second["application_id"] == "42"


async def test_press_button_other_4xx_is_a_client_error(stub, make_client):
    client = make_client(application_id=PIXVERSE_ID)
    stub.script["interactions"].append((400, {"code": 10062, "message": "Unknown interaction"}, {}))
    with pytest.raises(PixverseClientError) as info:
        await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                  message_flags=0, custom_id="c")
    assert type(info.value) is PixverseClientError
    assert (info.value.status, info.value.code) == (400, 10062)
    assert "Unknown interaction" in str(info.value)
    assert len(stub.of("interactions")) == 1  # a button is not a command: no refetch
    assert_no_token(info.value)


# ---------------------------------------------------------------- choosing PixVerse's commands


async def test_pixverse_is_chosen_by_name_ignoring_case_and_never_the_decoy(stub, make_client):
    stub.index_body = index(DECOY_CREATE, CREATE, apps=[{"id": DECOY_ID, "name": "Decoy"},
                                                        {"id": PIXVERSE_ID, "name": "pixVERSE"}])
    client = make_client()
    assert await client.pixverse_application_id(TOKEN, GUILD) == PIXVERSE_ID
    command = await client.command(TOKEN, GUILD, "create")
    assert command == CREATE


async def test_pixverse_is_chosen_by_the_configured_id(stub, make_client):
    # Named otherwise in the index: the setting wins, and a decoy called "PixVerse" is ignored.
    stub.index_body = index(DECOY_CREATE, CREATE, apps=[{"id": DECOY_ID, "name": "PixVerse"},
                                                        {"id": PIXVERSE_ID, "name": "PV"}])
    client = make_client(application_id=PIXVERSE_ID)
    assert await client.pixverse_application_id(TOKEN, GUILD) == PIXVERSE_ID
    assert await client.command(TOKEN, GUILD, "create") == CREATE
    await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                             options={"prompt": "p", "style": "Anime"})
    body = stub.of("interactions")[0]["json"]
    assert (body["application_id"], body["data"]["id"]) == (PIXVERSE_ID, CREATE["id"])


async def test_a_decoy_create_is_never_used(stub, make_client):
    stub.index_body = index(DECOY_CREATE, CREATE_SINGLE)  # PixVerse has no /create here
    client = make_client()
    with pytest.raises(CommandUnavailable) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime"})
    assert "no /create command" in str(info.value)
    assert stub.of("interactions") == []
    assert_no_token(info.value)


async def test_no_pixverse_in_the_server_is_command_unavailable(stub, make_client):
    stub.index_body = index(DECOY_CREATE, apps=[{"id": DECOY_ID, "name": "Decoy"}])
    client = make_client()
    with pytest.raises(CommandUnavailable) as info:
        await client.command(TOKEN, GUILD, "create")
    assert "no application named PixVerse" in str(info.value)
    with pytest.raises(CommandUnavailable):
        await client.pixverse_application_id(TOKEN, GUILD)


async def test_two_applications_named_pixverse_is_refused(stub, make_client):
    stub.index_body = index(DECOY_CREATE, CREATE, apps=[{"id": DECOY_ID, "name": "PixVerse"},
                                                        {"id": PIXVERSE_ID, "name": "PixVerse"}])
    client = make_client()
    with pytest.raises(CommandUnavailable) as info:
        await client.command(TOKEN, GUILD, "create")
    assert "PIXVERSE_APPLICATION_ID" in str(info.value)


async def test_index_is_cached_per_server_and_refresh_refetches(stub, make_client):
    client = make_client()
    for _ in range(2):
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime"})
    assert len(stub.of("index")) == 1
    assert len(stub.of("interactions")) == 2

    await client.command(TOKEN, "999999999999999999", "create")
    assert [r["path"].split("/")[4] for r in stub.of("index")] == [GUILD, "999999999999999999"]

    await client.command(TOKEN, GUILD, "create", refresh=True)
    assert len(stub.of("index")) == 3


async def test_the_returned_command_is_a_copy(stub, make_client):
    client = make_client()
    command = await client.command(TOKEN, GUILD, "create")
    command["options"].clear()
    assert (await client.command(TOKEN, GUILD, "create"))["options"] == CREATE["options"]


async def test_a_command_missing_from_a_cached_index_gets_one_refetch(stub, make_client):
    stub.index_body = index(CREATE)
    client = make_client()
    await client.command(TOKEN, GUILD, "create")
    stub.index_body = index(CREATE, CREATE_SINGLE)  # PixVerse added a command since
    assert (await client.command(TOKEN, GUILD, "create_single"))["id"] == CREATE_SINGLE["id"]
    assert len(stub.of("index")) == 2
    with pytest.raises(CommandUnavailable):
        await client.command(TOKEN, GUILD, "meme_face")
    assert len(stub.of("index")) == 3  # one refetch, not a loop


# ---------------------------------------------------------------- stale commands

STALE_ANSWERS = [
    {"code": 10063, "message": "Unknown application command"},
    {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {"data": {"_errors": [{"code": "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION",
                                         "message": "This command is outdated, please try again in a few minutes"}]}},
    },
    {"code": 50035, "message": "Invalid Form Body",
     "errors": {"data": {"version": {"_errors": [{"code": "X", "message": "bad"}]}}}},
    {"code": 0, "message": "This command is outdated"},
]


@pytest.mark.parametrize("answer", STALE_ANSWERS)
async def test_stale_command_refetches_once_and_resubmits(stub, make_client, answer):
    client = make_client()
    await client.command(TOKEN, GUILD, "create")
    new_create = dict(CREATE, version="6000000000000000777")
    stub.index_body = index(DECOY_CREATE, new_create)
    stub.script["interactions"].append((400, answer, {}))

    nonce = await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                     options={"prompt": "p", "style": "Anime"})
    assert len(stub.of("index")) == 2
    first, second = (p["json"] for p in stub.of("interactions"))
    assert first["data"]["version"] == CREATE["version"]
    assert second["data"]["version"] == "6000000000000000777"
    assert second["data"]["application_command"] == new_create
    assert second["nonce"] == nonce != first["nonce"]


async def test_still_stale_after_the_refetch_is_command_unavailable(stub, make_client):
    client = make_client()
    stub.script["interactions"] += [(400, STALE_ANSWERS[0], {}), (400, STALE_ANSWERS[0], {})]
    with pytest.raises(CommandUnavailable) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime"})
    assert "after refetching" in str(info.value)
    assert "Unknown application command" in str(info.value)
    assert len(stub.of("index")) == 2
    assert len(stub.of("interactions")) == 2
    assert_no_token(info.value)


async def test_an_ordinary_400_is_not_taken_for_a_stale_command(stub, make_client):
    client = make_client()
    answer = {"code": 50035, "message": "Invalid Form Body",
              "errors": {"data": {"options": {"0": {"value": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                                                            "message": "Must be 2048 or fewer in length."}]}}}}}}
    stub.script["interactions"].append((400, answer, {}))
    with pytest.raises(PixverseClientError) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime"})
    assert type(info.value) is PixverseClientError
    assert info.value.status == 400
    assert "Invalid Form Body" in str(info.value) and "Must be 2048 or fewer" in str(info.value)
    assert len(stub.of("index")) == 1 and len(stub.of("interactions")) == 1


# ---------------------------------------------------------------- transport errors


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_token_is_account_rejected_without_retry(stub, make_client, ftime, status):
    client = make_client()
    stub.script["interactions"].append((status, {"code": 0, "message": "401: Unauthorized"}, {}))
    with pytest.raises(AccountRejected) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                 options={"prompt": "p", "style": "Anime"})
    assert info.value.status == status
    assert isinstance(info.value, PixverseClientError)
    assert len(stub.of("interactions")) == 1
    assert ftime.waits == []
    assert_no_token(info.value)


async def test_rejected_token_on_the_index_is_account_rejected(stub, make_client):
    client = make_client()
    stub.script["index"].append((401, {"message": "401: Unauthorized", "code": 0}, {}))
    with pytest.raises(AccountRejected) as info:
        await client.command(TOKEN, GUILD, "create")
    assert info.value.status == 401
    assert len(stub.requests) == 1
    assert_no_token(info.value)


async def test_429_waits_retry_after_from_the_body(stub, make_client, ftime):
    client = make_client()
    await client.command(TOKEN, GUILD, "create")
    stub.script["interactions"].append(
        (429, {"message": "You are being rate limited.", "retry_after": 1.5, "global": False}, {"Retry-After": "9"})
    )
    nonce = await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                                     options={"prompt": "p", "style": "Anime"})
    assert ftime.waits == [1.5]  # the body's float wins over the header's whole seconds
    first, second = stub.of("interactions")
    assert second["at"] - first["at"] >= 1.5
    assert first["json"] == second["json"]  # the same submission, resent
    assert nonce == second["json"]["nonce"]


async def test_429_waits_the_retry_after_header(stub, make_client, ftime):
    client = make_client()
    stub.script["index"].append((429, None, {"Retry-After": "3"}))
    await client.command(TOKEN, GUILD, "create")
    assert ftime.waits == [3.0]
    assert len(stub.of("index")) == 2


async def test_429_holds_every_caller_of_the_account(stub, make_client, ftime):
    client = make_client(application_id=PIXVERSE_ID)
    stub.script["interactions"].append((429, {"retry_after": 2.5}, {}))
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0)
    await asyncio.gather(
        client.press_button(TOKEN, custom_id="a", **kwargs),
        client.press_button(TOKEN, custom_id="b", **kwargs),
    )
    first, *rest = stub.of("interactions")
    assert len(rest) == 2
    assert all(r["at"] >= first["at"] + 2.5 for r in rest)


async def test_429_that_keeps_coming_is_discord_unavailable(stub, make_client, ftime):
    client = make_client(application_id=PIXVERSE_ID, max_attempts=3)
    stub.script["interactions"] += [(429, {"retry_after": 0.25}, {})] * 3
    with pytest.raises(DiscordUnavailable) as info:
        await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                  message_flags=0, custom_id="c")
    assert len(stub.of("interactions")) == 3
    assert ftime.waits == [0.25, 0.25]
    assert "429" in str(info.value) and info.value.status == 429
    assert_no_token(info.value)


async def test_429_asking_for_too_long_a_wait_fails_at_once(stub, make_client, ftime):
    client = make_client(application_id=PIXVERSE_ID)
    stub.script["interactions"].append((429, {"retry_after": 3600}, {}))
    with pytest.raises(DiscordUnavailable) as info:
        await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                  message_flags=0, custom_id="c")
    assert info.value.status == 429
    assert ftime.waits == []
    assert len(stub.of("interactions")) == 1


async def test_5xx_is_retried_with_backoff_then_discord_unavailable(stub, make_client, ftime):
    client = make_client(application_id=PIXVERSE_ID, max_attempts=4)
    stub.script["interactions"] += [(503, {"message": "upstream"}, {})] * 4
    with pytest.raises(DiscordUnavailable) as info:
        await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                  message_flags=0, custom_id="c")
    assert len(stub.of("interactions")) == 4
    assert ftime.waits == [1, 2, 4]
    assert "after 4 attempts" in str(info.value) and "HTTP 503" in str(info.value)
    assert info.value.status == 503
    assert_no_token(info.value)


async def test_5xx_then_success_returns_the_nonce(stub, make_client, ftime):
    client = make_client(application_id=PIXVERSE_ID)
    stub.script["interactions"] += [(502, None, {}), (500, None, {})]
    nonce = await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                      message_flags=0, custom_id="c")
    assert ftime.waits == [1, 2]
    assert [p["json"]["nonce"] for p in stub.of("interactions")] == [nonce] * 3


async def test_network_errors_are_retried_then_discord_unavailable(make_client, ftime):
    client = make_client(base="http://127.0.0.1:9/api/v10", application_id=PIXVERSE_ID, max_attempts=3)
    with pytest.raises(DiscordUnavailable) as info:
        await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                  message_flags=0, custom_id="c")
    assert ftime.waits == [1, 2]
    assert "after 3 attempts" in str(info.value)
    assert info.value.__cause__ is None  # no aiohttp exception travels along
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert_no_token(info.value)


async def test_timeouts_are_retried(stub, make_client, ftime):
    client = make_client(application_id=PIXVERSE_ID, max_attempts=2, timeout=0.2)
    stub.hold[TOKEN] = asyncio.Event()  # never answers
    with pytest.raises(DiscordUnavailable) as info:
        await client.press_button(TOKEN, guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE,
                                  message_flags=0, custom_id="c")
    assert len(stub.of("interactions")) == 2
    assert ftime.waits == [1]
    assert "Timeout" in str(info.value)


async def test_other_4xx_is_a_client_error_with_discords_message(stub, make_client, ftime):
    client = make_client()
    stub.script["index"].append((404, {"code": 10004, "message": "Unknown Guild"}, {}))
    with pytest.raises(PixverseClientError) as info:
        await client.command(TOKEN, GUILD, "create")
    assert type(info.value) is PixverseClientError
    assert (info.value.status, info.value.code) == (404, 10004)
    assert "404" in str(info.value) and "Unknown Guild" in str(info.value)
    assert ftime.waits == [] and len(stub.requests) == 1


async def test_a_token_that_cannot_be_a_header_is_never_sent(stub, make_client):
    client = make_client()
    with pytest.raises(AccountRejected) as info:
        await client.command("bad token\nX-Injected: 1", GUILD, "create")
    assert stub.requests == []
    assert "bad token" not in str(info.value) + repr(info.value)


# ---------------------------------------------------------------- pacing


async def test_two_requests_of_one_token_are_an_interval_apart(stub, make_client, ftime):
    client = make_client(submit_interval=2.0, application_id=PIXVERSE_ID)
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0)
    await asyncio.gather(*(client.press_button(TOKEN, custom_id=str(i), **kwargs) for i in range(3)))
    times = [r["at"] for r in stub.of("interactions")]
    assert times[0] == 1000.0  # the first request does not wait
    assert [b - a for a, b in zip(times, times[1:])] == [2.0, 2.0]  # ZeroRandom: no jitter


async def test_run_command_paces_the_index_and_the_submission(stub, make_client, ftime):
    client = make_client(submit_interval=2.0)
    await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                             options={"prompt": "p", "style": "Anime"})
    get, post = stub.requests
    assert post["at"] - get["at"] >= 2.0


async def test_pacing_waits_only_the_rest_of_the_interval(stub, make_client, ftime):
    client = make_client(submit_interval=2.0, application_id=PIXVERSE_ID)
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0, custom_id="c")
    await client.press_button(TOKEN, **kwargs)
    ftime.now += 1.5
    await client.press_button(TOKEN, **kwargs)
    assert ftime.waits == [pytest.approx(0.5)]
    ftime.now += 10
    await client.press_button(TOKEN, **kwargs)
    assert len(ftime.waits) == 1


async def test_two_tokens_are_not_serialised(stub, make_client, ftime):
    client = make_client(submit_interval=2.0, application_id=PIXVERSE_ID)
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0, custom_id="c")
    stub.hold[TOKEN] = asyncio.Event()
    first_a = asyncio.create_task(client.press_button(TOKEN, **kwargs))
    await asyncio.wait_for(stub.arrived.wait(), 2)
    second_a = asyncio.create_task(client.press_button(TOKEN, **kwargs))

    # While TOKEN's request hangs (and its next caller queues), TOKEN_2 goes straight through.
    await asyncio.wait_for(client.press_button(TOKEN_2, **kwargs), 2)
    assert [r["authorization"] for r in stub.requests] == [TOKEN, TOKEN_2]
    assert ftime.waits == []
    assert not second_a.done()

    stub.hold[TOKEN].set()
    await asyncio.wait_for(asyncio.gather(first_a, second_a), 2)
    assert [r["authorization"] for r in stub.requests] == [TOKEN, TOKEN_2, TOKEN]
    assert ftime.waits == [2.0]


@pytest.mark.parametrize(("rng", "expected"), [(MaxRandom(), 2.4), (ZeroRandom(), 2.0)])
async def test_jitter_is_at_most_twenty_percent(stub, make_client, ftime, rng, expected):
    client = make_client(submit_interval=2.0, application_id=PIXVERSE_ID, rng=rng)
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0, custom_id="c")
    for _ in range(3):
        await client.press_button(TOKEN, **kwargs)
    assert ftime.waits == [pytest.approx(expected)] * 2


async def test_jitter_stays_within_bounds_and_varies(stub, make_client, ftime):
    client = make_client(submit_interval=2.0, application_id=PIXVERSE_ID, rng=random.Random(7))
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0, custom_id="c")
    for _ in range(12):
        await client.press_button(TOKEN, **kwargs)
    assert len(ftime.waits) == 11
    assert all(2.0 <= w <= 2.4 for w in ftime.waits)
    assert len(set(ftime.waits)) > 1


async def test_no_interval_means_no_wait_and_no_jitter(stub, make_client, ftime):
    client = make_client(submit_interval=0, application_id=PIXVERSE_ID, rng=MaxRandom())
    kwargs = dict(guild_id=GUILD, channel_id=CHANNEL, message_id=MESSAGE, message_flags=0, custom_id="c")
    for _ in range(3):
        await client.press_button(TOKEN, **kwargs)
    assert ftime.waits == []


# ---------------------------------------------------------------- the token stays secret


async def test_no_log_line_or_exception_carries_the_token(stub, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client()
    errors: list[BaseException] = []
    ok = dict(guild_id=GUILD, channel_id=CHANNEL, name="create", options={"prompt": "p", "style": "Anime"})

    await client.run_command(TOKEN, **ok)
    stub.script["interactions"] += [(429, {"retry_after": 0.1}, {}), (503, None, {}), (204, None, {})]
    await client.run_command(TOKEN, **ok)
    stub.script["interactions"] += [(400, STALE_ANSWERS[0], {}), (400, STALE_ANSWERS[0], {})]
    for status_script in (
        [(401, {"message": "401: Unauthorized"}, {})],
        [(403, {"message": "Missing Access"}, {})],
        [(500, None, {})] * 4,
        [(404, {"message": "Unknown Channel"}, {})],
        [],  # the stale pair queued above
    ):
        stub.script["interactions"] += status_script
        try:
            await client.run_command(TOKEN, **ok)
        except PixverseClientError as exc:
            errors.append(exc)
    offline = make_client(base="http://127.0.0.1:9/api/v10", max_attempts=2)
    try:
        await offline.command(TOKEN_2, GUILD, "create")
    except PixverseClientError as exc:
        errors.append(exc)

    assert len(errors) == 6
    for exc in errors:
        assert_no_token(exc)
    assert any("POST /interactions" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN_2 not in record.getMessage()
    assert TOKEN not in caplog.text and TOKEN_2 not in caplog.text
    assert TOKEN not in repr(client) and TOKEN not in repr(vars(client))
