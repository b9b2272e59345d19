"""The user-token client for PixVerse, against a local stand-in for Discord's user API."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import traceback
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from bot.pixverse.client import (
    AccountRejected,
    CommandUnavailable,
    DiscordUnavailable,
    DiscordUserClient,
    MAX_UPLOAD_BYTES,
    PixverseClientError,
    UploadFile,
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
ANIMATE = {
    "id": "5000000000000000003",
    "application_id": PIXVERSE_ID,
    "version": "6000000000000000003",
    "name": "animate",
    "type": 1,
    "options": [
        {"type": 11, "name": "image", "required": True},
        {"type": 3, "name": "prompt"},
        {"type": 4, "name": "motion"},
    ],
}
# Not a PixVerse command as documented: two images, to see the ids follow the option order.
TWO_IMAGES = {
    "id": "5000000000000000004",
    "application_id": PIXVERSE_ID,
    "version": "6000000000000000004",
    "name": "meme_face",
    "type": 1,
    "options": [
        {"type": 3, "name": "prompt", "required": True},
        {"type": 11, "name": "face", "required": True},
        {"type": 11, "name": "backdrop"},
    ],
}
# The signature in every upload URL the stub hands out: it must never be logged or raised.
UPLOAD_SIG = "SIGNATURE-0f1e2d3c4b5a"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
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
        self.script: dict[str, list[tuple[int, Any, dict[str, str]]]] = {
            "index": [], "interactions": [], "attachments": [], "upload": [],
        }
        self.hold: dict[str, asyncio.Event] = {}  # Authorization -> event the answer waits for
        self.arrived = asyncio.Event()
        self.base = ""
        self.root = ""  # the server without the API prefix: where the upload URLs point
        self.slots = 0  # upload slots handed out so far

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

    async def attachments(self, request: web.Request) -> web.Response:
        """POST /channels/{C}/attachments: a signed upload slot per file, as Discord answers."""
        await self._record(request, "attachments")
        scripted = self._scripted("attachments")
        if scripted is not None:
            return scripted
        out = []
        for file in self.requests[-1]["json"]["files"]:
            self.slots += 1
            out.append({
                "id": file["id"],
                "upload_url": f"{self.root}/upload/slot-{self.slots}?upload_id=UPLOAD{self.slots}&signature={UPLOAD_SIG}",
                "upload_filename": f"up/{self.slots}/{file['filename']}",
            })
        return web.json_response({"attachments": out})

    async def upload(self, request: web.Request) -> web.Response:
        """PUT to a signed upload URL (a storage host, not Discord's API)."""
        self.requests.append(
            {
                "kind": "upload",
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "data": await request.read(),
                "at": self.ftime.now,
            }
        )
        return self._scripted("upload") or web.Response(status=200)


@pytest.fixture
def ftime() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def stub(ftime):
    state = Stub(ftime)
    app = web.Application(client_max_size=2 * MAX_UPLOAD_BYTES)  # room for an image of the cap
    app.router.add_get("/api/v10/guilds/{guild}/application-command-index", state.command_index)
    app.router.add_post("/api/v10/interactions", state.interactions)
    app.router.add_post("/api/v10/channels/{channel}/attachments", state.attachments)
    app.router.add_put("/upload/{slot}", state.upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state.base = f"http://127.0.0.1:{port}/api/v10/"  # trailing slash on purpose
    state.root = f"http://127.0.0.1:{port}"
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


# ---------------------------------------------------------------- image options (type 11)


def image_index() -> dict:
    return index(DECOY_CREATE, CREATE, ANIMATE, TWO_IMAGES)


def assert_no_secret(exc: BaseException) -> None:
    """Neither token nor an upload URL's signed query string is in the exception."""
    assert_no_token(exc)
    text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
    assert UPLOAD_SIG not in text and "upload_id=" not in text


async def test_an_image_option_is_uploaded_and_referred_to_by_its_id(stub, make_client):
    stub.index_body = image_index()
    client = make_client()
    nonce = await client.run_command(
        TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
        options={"image": UploadFile("cat.png", PNG), "prompt": "the cat waves", "motion": 6},
    )
    index_get, slots, put, post = stub.requests
    assert index_get["kind"] == "index"

    assert (slots["method"], slots["path"]) == ("POST", f"/api/v10/channels/{CHANNEL}/attachments")
    assert (slots["authorization"], slots["content_type"]) == (TOKEN, "application/json")
    assert slots["json"] == {"files": [{"filename": "cat.png", "file_size": len(PNG), "id": "0"}]}

    assert (put["kind"], put["method"], put["path"]) == ("upload", "PUT", "/upload/slot-1")
    assert put["query"] == {"upload_id": "UPLOAD1", "signature": UPLOAD_SIG}  # the signed URL as given
    assert put["authorization"] is None  # the token never goes to the storage host
    assert put["data"] == PNG
    assert put["content_type"] == "image/png"

    assert (post["kind"], post["authorization"]) == ("interactions", TOKEN)
    body = post["json"]
    assert body["nonce"] == nonce
    assert body["data"]["options"] == [
        {"type": 11, "name": "image", "value": "0"},
        {"type": 3, "name": "prompt", "value": "the cat waves"},
        {"type": 4, "name": "motion", "value": 6},
    ]
    assert body["data"]["attachments"] == [{"id": "0", "filename": "cat.png", "uploaded_filename": "up/1/cat.png"}]
    assert body["data"]["application_command"] == ANIMATE


async def test_several_images_go_in_one_request_with_ids_in_option_order(stub, make_client):
    stub.index_body = image_index()
    client = make_client()
    face, backdrop = b"face-bytes", b"backdrop-bytes"
    # Duck-typed: any object with filename and data will do.
    await client.run_command(
        TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="meme_face",
        options={"backdrop": SimpleNamespace(filename="b.jpg", data=backdrop), "prompt": "p",
                 "face": UploadFile("f.webp", face)},
    )
    (slots,) = stub.of("attachments")
    assert slots["json"] == {"files": [
        {"filename": "b.jpg", "file_size": len(backdrop), "id": "0"},
        {"filename": "f.webp", "file_size": len(face), "id": "1"},
    ]}
    puts = stub.of("upload")
    assert [(p["path"], p["data"], p["authorization"]) for p in puts] == [
        ("/upload/slot-1", backdrop, None), ("/upload/slot-2", face, None),
    ]
    data = stub.of("interactions")[0]["json"]["data"]
    assert data["options"] == [
        {"type": 11, "name": "backdrop", "value": "0"},
        {"type": 3, "name": "prompt", "value": "p"},
        {"type": 11, "name": "face", "value": "1"},
    ]
    assert data["attachments"] == [
        {"id": "0", "filename": "b.jpg", "uploaded_filename": "up/1/b.jpg"},
        {"id": "1", "filename": "f.webp", "uploaded_filename": "up/2/f.webp"},
    ]


async def test_slots_are_matched_by_id_not_by_position(stub, make_client):
    stub.index_body = image_index()
    client = make_client()
    stub.script["attachments"].append((200, {"attachments": [
        {"id": "1", "upload_url": f"{stub.root}/upload/second?sig=x", "upload_filename": "up/second"},
        {"id": 0, "upload_url": f"{stub.root}/upload/first?sig=y", "upload_filename": "up/first"},
    ]}, {}))
    await client.run_command(
        TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="meme_face",
        options={"prompt": "p", "face": UploadFile("a.png", b"A"), "backdrop": UploadFile("b.png", b"B")},
    )
    assert [(p["path"], p["data"]) for p in stub.of("upload")] == [("/upload/first", b"A"), ("/upload/second", b"B")]
    assert stub.of("interactions")[0]["json"]["data"]["attachments"] == [
        {"id": "0", "filename": "a.png", "uploaded_filename": "up/first"},
        {"id": "1", "filename": "b.png", "uploaded_filename": "up/second"},
    ]


async def test_a_command_without_images_uploads_nothing(stub, make_client):
    stub.index_body = image_index()
    client = make_client()
    await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                             options={"image": UploadFile("x.png", b"x"), "prompt": None})
    await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="create",
                             options={"prompt": "p", "style": "Anime"})
    assert len(stub.of("attachments")) == 1 and len(stub.of("upload")) == 1
    assert stub.of("interactions")[1]["json"]["data"]["attachments"] == []


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_token_on_the_attachments_request_is_account_rejected(stub, make_client, ftime, status):
    stub.index_body = image_index()
    client = make_client()
    stub.script["attachments"].append((status, {"code": 0, "message": "401: Unauthorized"}, {}))
    with pytest.raises(AccountRejected) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": UploadFile("cat.png", PNG)})
    assert info.value.status == status
    assert "POST /channels/{channel}/attachments" in str(info.value)
    assert len(stub.of("attachments")) == 1
    assert stub.of("upload") == [] and stub.of("interactions") == []
    assert ftime.waits == []
    assert_no_secret(info.value)


async def test_the_attachments_request_is_paced_and_retried_like_any_other(stub, make_client, ftime):
    stub.index_body = image_index()
    client = make_client(submit_interval=2.0)
    stub.script["attachments"] += [(429, {"retry_after": 0.5}, {}), (502, None, {})]
    await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                             options={"image": UploadFile("cat.png", PNG)})
    kinds = [r["kind"] for r in stub.requests]
    assert kinds == ["index", "attachments", "attachments", "attachments", "upload", "interactions"]
    api = [r["at"] for r in stub.requests if r["kind"] != "upload"]
    assert all(b - a >= 2.0 for a, b in zip(api, api[1:]))  # one account: every API request paced
    put = stub.of("upload")[0]
    assert put["at"] == stub.requests[3]["at"]  # the storage host's PUT does not wait for the account


async def test_a_5xx_on_the_upload_is_retried_then_succeeds(stub, make_client, ftime):
    stub.index_body = image_index()
    client = make_client()
    stub.script["upload"].append((500, None, {}))
    nonce = await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                     options={"image": UploadFile("cat.png", PNG)})
    puts = stub.of("upload")
    assert len(puts) == 2
    assert all(p["data"] == PNG and p["authorization"] is None and p["path"] == "/upload/slot-1" for p in puts)
    assert ftime.waits == [1]
    assert len(stub.of("attachments")) == 1  # the same slot, uploaded again
    (post,) = stub.of("interactions")
    assert post["json"]["nonce"] == nonce
    assert post["json"]["data"]["attachments"][0]["uploaded_filename"] == "up/1/cat.png"


async def test_a_5xx_on_the_upload_that_keeps_coming_is_discord_unavailable(stub, make_client, ftime):
    stub.index_body = image_index()
    client = make_client(max_attempts=3)
    stub.script["upload"] += [(503, None, {})] * 3
    with pytest.raises(DiscordUnavailable) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": UploadFile("cat.png", PNG)})
    assert len(stub.of("upload")) == 3 and ftime.waits == [1, 2]
    assert "after 3 attempts" in str(info.value) and "HTTP 503" in str(info.value)
    assert stub.of("interactions") == []
    assert_no_secret(info.value)


async def test_network_errors_on_the_upload_are_retried_and_keep_the_url_secret(stub, make_client, ftime):
    stub.index_body = image_index()
    client = make_client(max_attempts=2)
    stub.script["attachments"].append((200, {"attachments": [
        {"id": "0", "upload_url": f"http://127.0.0.1:9/upload/x?upload_id=1&signature={UPLOAD_SIG}",
         "upload_filename": "up/x"},
    ]}, {}))
    with pytest.raises(DiscordUnavailable) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": UploadFile("cat.png", PNG)})
    assert ftime.waits == [1]
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert stub.of("interactions") == []
    assert_no_secret(info.value)


async def test_a_4xx_on_the_upload_is_a_client_error_without_secrets(stub, make_client, ftime):
    stub.index_body = image_index()
    client = make_client()
    stub.script["upload"].append((403, {"error": f"SignatureDoesNotMatch {UPLOAD_SIG}"}, {}))
    with pytest.raises(PixverseClientError) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": UploadFile("cat.png", PNG)})
    assert type(info.value) is PixverseClientError  # not AccountRejected: the storage host refused
    assert info.value.status == 403
    assert "403" in str(info.value) and "cat.png" in str(info.value)
    assert len(stub.of("upload")) == 1 and ftime.waits == []
    assert stub.of("interactions") == []
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {"attachments": "nope"},
        {"attachments": [{"id": "0", "upload_filename": "up/x"}]},
        {"attachments": [{"id": "0", "upload_url": "file:///etc/passwd", "upload_filename": "up/x"}]},
        {"attachments": [{"id": "0", "upload_url": "http://[::1/x", "upload_filename": "up/x"}]},
        {"attachments": [{"id": "0", "upload_url": "http://127.0.0.1:9/x", "upload_filename": ""}]},
        {"attachments": [{"id": "7", "upload_url": "http://127.0.0.1:9/x", "upload_filename": "up/x"}]},
    ],
)
async def test_a_malformed_attachments_answer_is_a_client_error(stub, make_client, answer):
    stub.index_body = image_index()
    client = make_client()
    stub.script["attachments"].append((200, answer, {}))
    with pytest.raises(PixverseClientError) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": UploadFile("cat.png", PNG)})
    assert type(info.value) is PixverseClientError
    assert "POST /channels/{channel}/attachments" in str(info.value) and "malformed" in str(info.value)
    assert stub.of("upload") == [] and stub.of("interactions") == []
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("cat.png", "takes a file with filename (str) and data (bytes), got str"),
        (b"raw bytes", "got bytes"),
        (SimpleNamespace(filename="cat.png"), "got SimpleNamespace"),
        (SimpleNamespace(data=b"x"), "got SimpleNamespace"),
        (SimpleNamespace(filename=None, data=b"x"), "got SimpleNamespace"),
        (SimpleNamespace(filename="cat.png", data="not bytes"), "got SimpleNamespace"),
        (UploadFile("", b"x"), "needs a plain file name"),
        (UploadFile("../cat.png", b"x"), "needs a plain file name"),
        (UploadFile("cat.png", b""), "is empty"),
        (UploadFile("big.png", b"\0" * (MAX_UPLOAD_BYTES + 1)), "more than the 10485760 bytes allowed"),
    ],
)
async def test_bad_images_are_refused_before_anything_is_sent(stub, make_client, value, fragment):
    stub.index_body = image_index()
    client = make_client()
    await client.command(TOKEN, GUILD, "animate")  # the index is cached: nothing at all is sent below
    sent = len(stub.requests)
    with pytest.raises(PixverseClientError) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": value, "prompt": "p"})
    assert fragment in str(info.value)
    assert "'image'" in str(info.value)
    assert len(stub.requests) == sent
    assert len(str(info.value)) < 300  # never the bytes


async def test_a_file_for_an_option_that_is_not_an_attachment_is_refused(stub, make_client):
    stub.index_body = image_index()
    client = make_client()
    with pytest.raises(PixverseClientError) as info:
        await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                 options={"image": UploadFile("a.png", b"a"), "prompt": UploadFile("b.png", b"b")})
    assert "'prompt'" in str(info.value) and "cannot take a file" in str(info.value)
    assert stub.of("attachments") == [] and stub.of("interactions") == []


async def test_an_image_of_exactly_the_cap_is_uploaded(stub, make_client):
    assert MAX_UPLOAD_BYTES == 10 * 1024 * 1024
    stub.index_body = image_index()
    client = make_client(timeout=10)
    data = b"\1" * MAX_UPLOAD_BYTES
    await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                             options={"image": UploadFile("big.mp4", data)})
    assert stub.of("attachments")[0]["json"]["files"][0]["file_size"] == MAX_UPLOAD_BYTES
    assert stub.of("upload")[0]["data"] == data


def test_upload_file_is_frozen_and_its_repr_has_no_bytes():
    file = UploadFile("cat.png", b"SECRET-BYTES")
    with pytest.raises(AttributeError):
        file.filename = "dog.png"  # type: ignore[misc]
    assert "SECRET-BYTES" not in repr(file)
    assert "cat.png" in repr(file) and "12" in repr(file)


async def test_stale_command_with_an_image_uploads_again_for_the_second_attempt(stub, make_client):
    stub.index_body = image_index()
    client = make_client()
    await client.command(TOKEN, GUILD, "animate")
    # PixVerse changed /animate: new version, and the image option now comes after the prompt.
    new_animate = dict(ANIMATE, version="6000000000000000778",
                       options=[{"type": 3, "name": "prompt"}, {"type": 11, "name": "image", "required": True}])
    stub.index_body = index(new_animate)
    stub.script["interactions"].append((400, STALE_ANSWERS[0], {}))

    nonce = await client.run_command(TOKEN, guild_id=GUILD, channel_id=CHANNEL, name="animate",
                                     options={"prompt": "p", "image": UploadFile("cat.png", PNG)})
    assert [r["kind"] for r in stub.requests] == [
        "index", "attachments", "upload", "interactions", "index", "attachments", "upload", "interactions",
    ]
    first_put, second_put = stub.of("upload")
    assert (first_put["path"], second_put["path"]) == ("/upload/slot-1", "/upload/slot-2")
    assert first_put["data"] == second_put["data"] == PNG
    assert second_put["authorization"] is None
    first, second = (p["json"] for p in stub.of("interactions"))
    assert first["data"]["version"] == ANIMATE["version"]
    assert second["data"]["version"] == "6000000000000000778"
    assert second["data"]["application_command"] == new_animate
    assert second["data"]["options"] == [
        {"type": 3, "name": "prompt", "value": "p"},
        {"type": 11, "name": "image", "value": "0"},
    ]
    assert second["data"]["attachments"] == [{"id": "0", "filename": "cat.png", "uploaded_filename": "up/2/cat.png"}]
    assert second["nonce"] == nonce != first["nonce"]


async def test_no_log_line_carries_the_token_or_an_upload_signature(stub, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    stub.index_body = image_index()
    client = make_client()
    ok = dict(guild_id=GUILD, channel_id=CHANNEL, name="animate", options={"image": UploadFile("cat.png", PNG)})
    stub.script["upload"] += [(500, None, {})]
    await client.run_command(TOKEN, **ok)
    stub.script["upload"] += [(403, None, {})]
    with pytest.raises(PixverseClientError):
        await client.run_command(TOKEN, **ok)
    assert any("PUT upload_url" in r.getMessage() for r in caplog.records)
    assert any("POST /channels/{channel}/attachments" in r.getMessage() for r in caplog.records)
    for text in [r.getMessage() for r in caplog.records] + [caplog.text]:
        assert TOKEN not in text and UPLOAD_SIG not in text and "upload_id=" not in text
