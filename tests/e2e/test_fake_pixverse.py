"""The fake PixVerse (tests/e2e/fake/pixverse.py), driven directly over HTTP.

These tests pin the behaviour other e2e tests rely on (shared/pixverse-protocol.md,
part 5): the command index with its decoy, the create / create_single / button flows
and their exact messages, moderation, overload, blocked tokens, stale versions, history
paging, hold/release with the executing counters, and (with a minimal discord.py client)
that the messages arrive over the gateway as discord.py expects them. Also: animate and
meme_face with their uploaded images, and a member's attachment given to the bot's own
slash command (MemberFile), downloadable from the fake CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl

from tests.e2e.fake_discord import DECOY_APPLICATION_ID, DISCORD_EPOCH_MS, PIXVERSE_APPLICATION_ID, FakeDiscord, MemberFile

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord
    from discord import app_commands

BOT_TOKEN = "pixverse-e2e-bot-token"
BOT_ID = 910000000000000001
GUILD_ID = 920000000000000001
CHANNEL_ID = 920000000000000002
CHANNEL_2_ID = 920000000000000003
NO_PIXVERSE_GUILD_ID = 930000000000000001
NO_PIXVERSE_CHANNEL_ID = 930000000000000002
USER_A = 940000000000000001
USER_B = 940000000000000002
TOKEN_A = "user-token-a"
TOKEN_B = "user-token-b"
SHUFFLE = "\N{TWISTED RIGHTWARDS ARROWS}"
UNKNOWN_COMMAND = {"message": "Unknown application command", "code": 10063}
UNKNOWN_INTERACTION = {"message": "Unknown interaction", "code": 10062}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3  # any bytes; PixVerse must get exactly these


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(bot_token=BOT_TOKEN, application_id=BOT_ID, bot_user_id=BOT_ID)
    server.add_guild(GUILD_ID, name="Studio", channel_ids=[CHANNEL_ID, CHANNEL_2_ID])
    server.add_guild(NO_PIXVERSE_GUILD_ID, name="Elsewhere", channel_ids=[NO_PIXVERSE_CHANNEL_ID])
    server.add_user_token(TOKEN_A, user_id=USER_A, username="account-a")
    server.add_user_token(TOKEN_B, user_id=USER_B, username="account-b")
    server.add_pixverse(guild_ids=[GUILD_ID], step_delay=0.01)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --------------------------------------------------------------------------- helpers


def snowflake_at(ts: float) -> int:
    return (int(ts * 1000) - DISCORD_EPOCH_MS) << 22


def command_body(fake: FakeDiscord, name: str, options: dict[str, Any], *, channel_id: int = CHANNEL_ID,
                 guild_id: int = GUILD_ID, command: dict | None = None) -> dict:
    """The body part 3 of the protocol prescribes for a slash command."""
    cmd = command or fake.pixverse_commands[name]
    types = {o["name"]: o["type"] for o in cmd["options"]}
    return {
        "type": 2,
        "application_id": cmd["application_id"],
        "guild_id": str(guild_id),
        "channel_id": str(channel_id),
        "session_id": secrets.token_hex(16),
        "nonce": str(snowflake_at(time.time())),
        "data": {
            "version": cmd["version"],
            "id": cmd["id"],
            "name": cmd["name"],
            "type": 1,
            "options": [{"type": types[k], "name": k, "value": v} for k, v in options.items()],
            "application_command": cmd,
            "attachments": [],
        },
    }


def button_body(message: dict, label: str) -> dict:
    return {
        "type": 3,
        "application_id": str(PIXVERSE_APPLICATION_ID),
        "guild_id": message["guild_id"],
        "channel_id": message["channel_id"],
        "message_id": message["id"],
        "message_flags": message["flags"],
        "session_id": secrets.token_hex(16),
        "nonce": str(snowflake_at(time.time())),
        "data": {"component_type": 2, "custom_id": custom_id(message, label)},
    }


def buttons(message: dict) -> list[dict]:
    return [b for row in message["components"] for b in row["components"]]


def button_name(button: dict) -> str:
    return button.get("label") or button["emoji"]["name"]


def custom_id(message: dict, label: str) -> str:
    return next(b["custom_id"] for b in buttons(message) if button_name(b) == label)


async def post(http: aiohttp.ClientSession, url: str, token: str | None, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    async with http.post(url, json=body, headers=headers) as resp:
        raw = await resp.read()
        if raw:
            assert resp.headers["Content-Type"] == "application/json"
        return resp.status, (json.loads(raw) if raw else None)


async def get(http: aiohttp.ClientSession, url: str, token: str | None, **params: Any) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    async with http.get(url, headers=headers, params={k: str(v) for k, v in params.items()}) as resp:
        return resp.status, await resp.json(content_type=None)


async def interact(http: aiohttp.ClientSession, fake: FakeDiscord, body: Any, token: str = TOKEN_A) -> tuple[int, Any]:
    return await post(http, fake.api_base_url + "/interactions", token, body)


def head(user: int, prompt: str, style: str, ratio: str = "16:9") -> str:
    return f"<@{user}> (prompt: {prompt} style: {style} aspect-ratio: {ratio})"


def is_final(message: dict) -> bool:
    return bool(message["attachments"])


async def upload(http: aiohttp.ClientSession, fake: FakeDiscord, filename: str, data: bytes) -> str:
    """Part 3's image upload: an upload slot, then the PUT of the bytes. Returns the upload_filename."""
    status, slots = await post(http, f"{fake.api_base_url}/channels/{CHANNEL_ID}/attachments", TOKEN_A,
                               {"files": [{"filename": filename, "file_size": len(data), "id": "0"}]})
    assert status == 200, slots
    (slot,) = slots["attachments"]
    async with http.put(slot["upload_url"], data=data) as resp:
        assert resp.status == 200
    return slot["upload_filename"]


def image_body(fake: FakeDiscord, name: str, options: dict[str, Any], image_option: str, filename: str,
               uploaded_filename: str) -> dict:
    """A slash command whose ``image_option`` is the uploaded file (value "0", as part 3 prescribes)."""
    body = command_body(fake, name, {image_option: "0", **options})
    body["data"]["attachments"] = [{"id": "0", "filename": filename, "uploaded_filename": uploaded_filename}]
    return body


# --------------------------------------------------------------------------- the command index


async def test_command_index_lists_pixverse_and_the_decoy(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    url = f"{fake.api_base_url}/guilds/{GUILD_ID}/application-command-index"
    status, index = await get(http, url, TOKEN_A)
    assert status == 200
    assert [(a["id"], a["name"]) for a in index["applications"]] == [
        (str(DECOY_APPLICATION_ID), "Decoy Bot"),
        (str(PIXVERSE_APPLICATION_ID), "PixVerse"),
    ]
    pixverse_app = index["applications"][1]
    assert pixverse_app["bot"]["id"] == str(PIXVERSE_APPLICATION_ID) and pixverse_app["bot"]["bot"] is True

    commands = index["application_commands"]
    # The trap: the first command named "create" is the decoy's.
    first_create = next(c for c in commands if c["name"] == "create")
    assert first_create["application_id"] == str(DECOY_APPLICATION_ID)
    mine = {c["name"]: c for c in commands if c["application_id"] == str(PIXVERSE_APPLICATION_ID)}
    assert list(mine) == ["create", "create_single", "animate", "meme_face"]
    for cmd in mine.values():
        assert {"id", "application_id", "version", "name", "type", "description", "options"} <= set(cmd)
        assert cmd["type"] == 1 and cmd["description"] and cmd["id"].isdigit() and cmd["version"].isdigit()
    create_opts = [(o["name"], o["type"], o["required"]) for o in mine["create"]["options"]]
    assert create_opts == [
        ("prompt", 3, True),
        ("style", 3, True),
        ("aspect_ratio", 3, False),
        ("negative_prompt", 3, False),
        ("character", 3, False),
    ]
    assert [(o["name"], o["type"], o["required"]) for o in mine["create_single"]["options"]] == [*create_opts, ("seed_value", 4, False)]
    assert [o["type"] for o in mine["animate"]["options"]][0] == 11
    assert mine["create"]["id"] != first_create["id"]
    assert mine == fake.pixverse_commands

    # Another guild without PixVerse: an empty index. Unknown guild: 404.
    status, other = await get(http, f"{fake.api_base_url}/guilds/{NO_PIXVERSE_GUILD_ID}/application-command-index", TOKEN_A)
    assert (status, other) == (200, {"applications": [], "application_commands": []})
    status, _ = await get(http, f"{fake.api_base_url}/guilds/1/application-command-index", TOKEN_A)
    assert status == 404

    # Tokens: unknown, bot-prefixed and blocked ones are refused.
    assert (await get(http, url, "nobody"))[0] == 401
    assert (await get(http, url, f"Bot {BOT_TOKEN}"))[0] == 401
    fake.pixverse_blocked_tokens[TOKEN_A] = 403
    assert (await get(http, url, TOKEN_A))[0] == 403
    assert (await get(http, url, TOKEN_B))[0] == 200


# --------------------------------------------------------------------------- create flows


async def test_create_flow_posts_waiting_progress_and_result(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    before = snowflake_at(time.time() - 1)
    body = command_body(fake, "create", {"prompt": "a red fox in snow", "style": "Anime"})
    assert await interact(http, fake, body) == (204, None)
    await fake.wait_for_pixverse_idle()

    h = head(USER_A, "a red fox in snow", "Anime")
    assert [(t, m["content"]) for t, m in fake.message_events] == [
        ("MESSAGE_CREATE", f"{h} (Waiting to start)"),
        ("MESSAGE_UPDATE", f"{h} (37%)"),
        ("MESSAGE_CREATE", f"{h} Author: <@{USER_A}>"),
    ]
    (_, waiting), (_, edited), (_, final) = fake.message_events
    pixverse_user = {"id": str(PIXVERSE_APPLICATION_ID), "username": "PixVerse", "bot": True}
    for msg in (waiting, edited, final):
        assert pixverse_user.items() <= msg["author"].items()
        assert (msg["channel_id"], msg["guild_id"], msg["flags"]) == (str(CHANNEL_ID), str(GUILD_ID), 0)
        assert (msg["pinned"], msg["tts"], msg["mention_everyone"], msg["mention_roles"]) == (False, False, False, [])
        assert [u["id"] for u in msg["mentions"]] == [str(USER_A)]
        assert msg["timestamp"]

    assert waiting["type"] == 20 and waiting["edited_timestamp"] is None and waiting["attachments"] == []
    meta = waiting["interaction_metadata"]
    assert (meta["type"], meta["user"]["id"], meta["authorizing_integration_owners"]) == (2, str(USER_A), {"0": str(GUILD_ID)})
    assert edited["id"] == waiting["id"] and edited["edited_timestamp"] is not None

    assert final["type"] == 0 and "interaction_metadata" not in final
    assert int(final["id"]) > int(waiting["id"]) > before
    assert [a["filename"] for a in final["attachments"]] == [f"pixverse_{i}.mp4" for i in range(1, 5)]
    assert all(a["content_type"] == "video/mp4" and a["size"] > 0 and a["id"] for a in final["attachments"])
    rows = [[button_name(b) for b in row["components"]] for row in final["components"]]
    assert rows == [["U1", "U2", "U3", "U4"], ["V1", "V2", "V3", "V4"], ["ReDo", SHUFFLE]]
    all_buttons = buttons(final)
    assert all(b["type"] == 2 and b["style"] == 2 for b in all_buttons)
    assert "label" not in all_buttons[-1] and all_buttons[-1]["emoji"]["name"] == SHUFFLE
    assert len({b["custom_id"] for b in all_buttons}) == 10

    # Stored in the channel (the edit in place), oldest first.
    assert fake.channel_messages[CHANNEL_ID] == [edited, final]
    assert fake.pixverse_interactions == [{**body, "_user_id": USER_A}]
    assert fake.pixverse_executing == {USER_A: 0} and fake.pixverse_max_executing == {USER_A: 1}
    assert fake.pixverse_jobs[0]["state"] == "completed" and fake.pixverse_jobs[0]["result_message_id"] == final["id"]

    # The attachment URL serves the announced bytes.
    attachment = final["attachments"][0]
    assert attachment["url"].startswith(fake.base_url + "/cdn/attachments/")
    async with http.get(attachment["url"]) as resp:
        assert resp.status == 200 and resp.content_type == "video/mp4"
        assert len(await resp.read()) == attachment["size"]


async def test_create_single_gives_one_video(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    options = {"prompt": "city at night", "style": "3D Animation", "aspect_ratio": "9:16", "seed_value": 42, "negative_prompt": "blur"}
    assert await interact(http, fake, command_body(fake, "create_single", options)) == (204, None)
    final = await fake.wait_for_channel_message(CHANNEL_ID, is_final)
    assert final["content"] == f"{head(USER_A, 'city at night', '3D Animation', '9:16')} Author: <@{USER_A}>"
    (video,) = final["attachments"]
    assert (video["filename"], video["content_type"], video["width"], video["height"]) == ("pixverse_1.mp4", "video/mp4", 720, 1280)
    assert [button_name(b) for b in buttons(final)] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", SHUFFLE]
    await fake.wait_for_pixverse_idle()
    assert fake.pixverse_jobs[0]["options"]["seed_value"] == 42


async def test_buttons_reply_to_the_result(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "waves", "style": "Realistic"})))[0] == 204
    result = await fake.wait_for_channel_message(CHANNEL_ID, is_final)
    await fake.wait_for_pixverse_idle()

    expected_videos = {"U2": 1, "V3": 4, "ReDo": 4, SHUFFLE: 4}
    for label, videos in expected_videos.items():
        seen = len(fake.message_events)
        body = button_body(result, label)
        assert await interact(http, fake, body, TOKEN_A) == (204, None)
        await fake.wait_for_pixverse_idle()
        events = fake.message_events[seen:]
        h = head(USER_A, "waves", "Realistic")
        assert [(t, m["content"]) for t, m in events] == [
            ("MESSAGE_CREATE", f"{h} (Waiting to start)"),
            ("MESSAGE_UPDATE", f"{h} (37%)"),
            ("MESSAGE_CREATE", f"{h} Author: <@{USER_A}>"),
        ], label
        for _, msg in events:
            assert msg["type"] == 19
            assert msg["message_reference"] == {"type": 0, "message_id": result["id"], "channel_id": str(CHANNEL_ID),
                                                "guild_id": str(GUILD_ID)}
            assert msg["referenced_message"]["id"] == result["id"]
        first, final = events[0][1], events[2][1]
        meta = first["interaction_metadata"]
        assert (meta["type"], meta["user"]["id"], meta["interacted_message_id"]) == (3, str(USER_A), result["id"])
        assert "interaction_metadata" not in final
        assert len(final["attachments"]) == videos and all(a["content_type"] == "video/mp4" for a in final["attachments"])
        new_ids = {b["custom_id"] for b in buttons(final)}
        assert len(new_ids) == 10 and not new_ids & {b["custom_id"] for b in buttons(result)}

    # The buttons of a button's result work too.
    upscaled = fake.find_channel_message(CHANNEL_ID, fake.pixverse_jobs[1]["result_message_id"])
    assert upscaled is not None and len(upscaled["attachments"]) == 1
    assert (await interact(http, fake, button_body(upscaled, "V1")))[0] == 204
    await fake.wait_for_pixverse_idle()
    assert fake.pixverse_jobs[-1]["button"] == "V1" and fake.pixverse_jobs[-1]["reference"]["id"] == upscaled["id"]
    assert [j["button"] for j in fake.pixverse_jobs] == [None, "U2", "V3", "ReDo", SHUFFLE, "V1"]

    # Unknown custom_id, a message that is not a result, a result addressed in the wrong channel.
    bad = button_body(result, "U1")
    bad["data"]["custom_id"] = "made-up"
    assert await interact(http, fake, bad) == (400, UNKNOWN_INTERACTION)
    waiting = fake.channel_messages[CHANNEL_ID][0]
    not_result = {**button_body(result, "U1"), "message_id": waiting["id"]}
    assert await interact(http, fake, not_result) == (400, UNKNOWN_INTERACTION)
    elsewhere = {**button_body(result, "U1"), "channel_id": str(CHANNEL_2_ID)}
    assert await interact(http, fake, elsewhere) == (400, UNKNOWN_INTERACTION)
    assert len(fake.pixverse_interactions) == 6


# --------------------------------------------------------------------------- refusals


async def test_moderated_prompt_gets_one_banned_message(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    fake.pixverse_moderated_words = {"gore"}
    prompt = "a scene full of GORE"
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": prompt, "style": "Anime"})))[0] == 204
    await fake.wait_for_pixverse_idle()
    (event,) = fake.message_events
    assert event[0] == "MESSAGE_CREATE"
    msg = event[1]
    assert msg["content"] == head(USER_A, prompt, "Anime") and "Waiting to start" not in msg["content"]
    assert msg["interaction_metadata"]["user"]["id"] == str(USER_A)
    (embed,) = msg["embeds"]
    assert (embed["title"], embed["description"]) == ("Banned prompt", prompt)
    assert msg["attachments"] == [] and msg["components"] == []
    assert fake.pixverse_executing == {USER_A: 0} and fake.pixverse_jobs[0]["state"] == "moderated"


async def test_overloaded_prompt_gets_queue_full(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    fake.pixverse_overloaded_prompts = {"busy hour"}
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "the busy hour", "style": "Anime"})))[0] == 204
    await fake.wait_for_pixverse_idle()
    ((t, msg),) = fake.message_events
    assert t == "MESSAGE_CREATE" and msg["content"] == head(USER_A, "the busy hour", "Anime")
    assert msg["interaction_metadata"]["user"]["id"] == str(USER_A)
    assert [(e["title"], e["description"]) for e in msg["embeds"]] == [("Too many requests", "The queue is full, try again later")]
    assert fake.pixverse_jobs[0]["state"] == "overloaded" and fake.pixverse_max_executing == {USER_A: 1}


async def test_blocked_and_unknown_tokens_are_refused(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    body = command_body(fake, "create", {"prompt": "p", "style": "Anime"})
    fake.pixverse_blocked_tokens[TOKEN_A] = 401
    assert await interact(http, fake, body, TOKEN_A) == (401, {"message": "401: Unauthorized", "code": 0})
    assert (await interact(http, fake, body, "not-a-known-token"))[0] == 401
    assert (await interact(http, fake, body, f"Bot {BOT_TOKEN}"))[0] == 401
    fake.pixverse_blocked_tokens[TOKEN_B] = 429
    status, answer = await interact(http, fake, body, TOKEN_B)
    assert status == 429 and answer["retry_after"] > 0
    assert fake.pixverse_interactions == [] and fake.pixverse_jobs == []
    # Unblocked, the same body goes through.
    del fake.pixverse_blocked_tokens[TOKEN_A]
    assert (await interact(http, fake, body, TOKEN_A))[0] == 204
    await fake.wait_for_pixverse_idle()


async def test_stale_version_unknown_command_decoy_and_bad_bodies(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    body = command_body(fake, "create", {"prompt": "p", "style": "Anime"})
    stale = json.loads(json.dumps(body))
    stale["data"]["version"] = "1"
    assert await interact(http, fake, stale) == (400, UNKNOWN_COMMAND)
    unknown = json.loads(json.dumps(body))
    unknown["data"]["id"] = "123"
    assert await interact(http, fake, unknown) == (400, UNKNOWN_COMMAND)

    # PixVerse updates its commands: a cached version goes stale, the refetched one works.
    old_version = body["data"]["version"]
    new_version = fake.pixverse_bump_version()
    assert new_version != old_version
    assert await interact(http, fake, body) == (400, UNKNOWN_COMMAND)
    status, index = await get(http, f"{fake.api_base_url}/guilds/{GUILD_ID}/application-command-index", TOKEN_A)
    fresh = next(c for c in index["application_commands"] if c["application_id"] == str(PIXVERSE_APPLICATION_ID) and c["name"] == "create")
    assert fresh["version"] == new_version
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "p", "style": "Anime"}, command=fresh)))[0] == 204

    # PixVerse's commands do not exist in a guild without PixVerse.
    other = command_body(fake, "create", {"prompt": "p", "style": "Anime"}, channel_id=NO_PIXVERSE_CHANNEL_ID, guild_id=NO_PIXVERSE_GUILD_ID)
    assert await interact(http, fake, other) == (400, UNKNOWN_COMMAND)

    # The decoy's create is accepted like Discord would, and nothing ever answers it.
    decoy = command_body(fake, "create", {"prompt": "decoyed", "style": "Anime"}, command=fake.decoy_commands["create"])
    assert await interact(http, fake, decoy) == (204, None)
    assert fake.decoy_interactions == [{**decoy, "_user_id": USER_A}]

    # Bodies Discord would not accept.
    no_style = command_body(fake, "create", {"prompt": "p"})
    wrong_type = command_body(fake, "create", {"prompt": "p", "style": "Anime"})
    wrong_type["data"]["options"][0]["type"] = 4
    no_session = {k: v for k, v in body.items() if k != "session_id"}
    wrong_guild = {**body, "guild_id": str(NO_PIXVERSE_GUILD_ID)}
    for bad in (no_style, wrong_type, no_session, wrong_guild, {"type": 2}, [1, 2], {**body, "type": 9}):
        status, answer = await interact(http, fake, bad)
        assert (status, answer["code"]) == (400, 50035), bad
    async with http.post(fake.api_base_url + "/interactions", data=b"{not json", headers={
        "Authorization": TOKEN_A, "Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 50109

    await fake.wait_for_pixverse_idle()
    assert len(fake.pixverse_interactions) == 1
    assert [m["content"] for m in fake.channel_messages[CHANNEL_ID] if "decoyed" in m["content"]] == []


async def test_animate_uploads_the_image_first(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    status, slots = await post(http, f"{fake.api_base_url}/channels/{CHANNEL_ID}/attachments", TOKEN_A,
                               {"files": [{"filename": "face.png", "file_size": 4, "id": "0"}]})
    assert status == 200
    (slot,) = slots["attachments"]
    # The upload host must not get the Discord token.
    async with http.put(slot["upload_url"], data=b"\x89PNG", headers={"Authorization": TOKEN_A}) as resp:
        assert resp.status == 400
    async with http.put(slot["upload_url"], data=b"\x89PNG") as resp:
        assert resp.status == 200
    assert fake.uploads[slot["upload_filename"]]["data"] == b"\x89PNG"

    body = command_body(fake, "animate", {"image": "0", "prompt": "smile"})
    body["data"]["attachments"] = [{"id": "0", "filename": "face.png", "uploaded_filename": slot["upload_filename"]}]
    assert await interact(http, fake, body) == (204, None)
    final = await fake.wait_for_channel_message(CHANNEL_ID, is_final)
    assert len(final["attachments"]) == 1 and "(prompt: smile motion: 5)" in final["content"]

    missing = command_body(fake, "animate", {"image": "0", "prompt": "smile"})  # no data.attachments
    assert (await interact(http, fake, missing))[0] == 400
    await fake.wait_for_pixverse_idle()


async def test_animate_flow_with_the_uploaded_image(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    uploaded = await upload(http, fake, "cat.png", PNG)
    options = {"prompt": "the cat waves", "motion": 7, "seed_value": 9, "hd_quality": "Yes"}
    body = image_body(fake, "animate", options, "image", "cat.png", uploaded)
    assert await interact(http, fake, body) == (204, None)
    await fake.wait_for_pixverse_idle()

    h = f"<@{USER_A}> (prompt: the cat waves motion: 7)"
    assert [(t, m["content"]) for t, m in fake.message_events] == [
        ("MESSAGE_CREATE", f"{h} (Waiting to start)"),
        ("MESSAGE_UPDATE", f"{h} (37%)"),
        ("MESSAGE_CREATE", f"{h} Author: <@{USER_A}>"),
    ]
    (_, waiting), _, (_, final) = fake.message_events
    assert waiting["type"] == 20 and waiting["interaction_metadata"]["name"] == "animate"
    assert waiting["interaction_metadata"]["user"]["id"] == str(USER_A)
    assert [(a["filename"], a["content_type"]) for a in final["attachments"]] == [("pixverse_1.mp4", "video/mp4")]
    assert [[button_name(b) for b in row["components"]] for row in final["components"]] == [["U1", "ReDo"]]

    (job,) = fake.pixverse_jobs
    assert (job["command"], job["state"], job["prompt"], job["group"]) == ("animate", "completed", "the cat waves",
                                                                           "(prompt: the cat waves motion: 7)")
    assert job["images"] == {"image": {"filename": "cat.png", "uploaded_filename": uploaded, "data": PNG}}
    assert {k: job["options"][k] for k in options} == options

    # A button on the result repeats the origin's group and carries U1 / ReDo again.
    seen = len(fake.message_events)
    assert await interact(http, fake, button_body(final, "U1")) == (204, None)
    await fake.wait_for_pixverse_idle()
    events = fake.message_events[seen:]
    assert [m["content"] for _, m in events] == [f"{h} (Waiting to start)", f"{h} (37%)", f"{h} Author: <@{USER_A}>"]
    again = events[-1][1]
    assert again["type"] == 19 and again["message_reference"]["message_id"] == final["id"]
    assert len(again["attachments"]) == 1 and [button_name(b) for b in buttons(again)] == ["U1", "ReDo"]
    assert fake.pixverse_jobs[-1]["button"] == "U1" and fake.pixverse_jobs[-1]["images"] == {}
    # The result of an animate has no V buttons to press.
    assert not any(button_name(b).startswith("V") for b in buttons(final))


async def test_animate_without_prompt_and_meme_face_groups(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    uploaded = await upload(http, fake, "still.jpg", b"JFIF-still")
    assert (await interact(http, fake, image_body(fake, "animate", {}, "image", "still.jpg", uploaded)))[0] == 204
    final = await fake.wait_for_channel_message(CHANNEL_ID, is_final)
    assert final["content"] == f"<@{USER_A}> (prompt:  motion: 5) Author: <@{USER_A}>"
    await fake.wait_for_pixverse_idle()
    assert fake.pixverse_jobs[0]["images"]["image"]["data"] == b"JFIF-still"

    face = await upload(http, fake, "face.png", PNG[::-1])
    options = {"prompt": "dancing in the rain", "negative_prompt": "blur", "seed_value": 3, "aspect_ratio": "9:16"}
    seen = len(fake.message_events)
    assert (await interact(http, fake, image_body(fake, "meme_face", options, "face", "face.png", face)))[0] == 204
    await fake.wait_for_pixverse_idle()
    h = f"<@{USER_A}> (prompt: dancing in the rain)"
    events = fake.message_events[seen:]
    assert [m["content"] for _, m in events] == [f"{h} (Waiting to start)", f"{h} (37%)", f"{h} Author: <@{USER_A}>"]
    final = events[-1][1]
    (video,) = final["attachments"]
    assert (video["content_type"], video["width"], video["height"]) == ("video/mp4", 720, 1280)
    assert [button_name(b) for b in buttons(final)] == ["U1", "ReDo"]
    job = fake.pixverse_jobs[-1]
    assert job["command"] == "meme_face" and job["images"] == {"face": {"filename": "face.png", "uploaded_filename": face,
                                                                       "data": PNG[::-1]}}


async def test_image_options_and_moderation(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    index = {o["name"]: (o["type"], o["required"]) for o in fake.pixverse_commands["animate"]["options"]}
    assert index == {"image": (11, True), "prompt": (3, False), "motion": (4, False), "seed_value": (4, False),
                     "hd_quality": (3, False)}
    index = {o["name"]: (o["type"], o["required"]) for o in fake.pixverse_commands["meme_face"]["options"]}
    assert index == {"face": (11, True), "prompt": (3, True), "negative_prompt": (3, False), "seed_value": (4, False),
                     "aspect_ratio": (3, False)}

    # A slot whose bytes were never PUT, an unknown uploaded_filename, no image at all, meme_face without its prompt,
    # a motion out of 1-10: all refused, nothing runs.
    status, slots = await post(http, f"{fake.api_base_url}/channels/{CHANNEL_ID}/attachments", TOKEN_A,
                               {"files": [{"filename": "cat.png", "file_size": len(PNG), "id": "0"}]})
    assert status == 200
    not_put, upload_url = slots["attachments"][0]["upload_filename"], slots["attachments"][0]["upload_url"]
    done = await upload(http, fake, "cat.png", PNG)
    refused = [
        image_body(fake, "animate", {"prompt": "p"}, "image", "cat.png", not_put),
        image_body(fake, "animate", {"prompt": "p"}, "image", "cat.png", "nope/cat.png"),
        command_body(fake, "animate", {"prompt": "p"}),
        image_body(fake, "meme_face", {}, "face", "cat.png", done),
        image_body(fake, "animate", {"motion": 11}, "image", "cat.png", done),
    ]
    wrong_id = image_body(fake, "animate", {}, "image", "cat.png", done)
    wrong_id["data"]["options"][0]["value"] = "1"  # no attachment "1" in data.attachments
    for bad in (*refused, wrong_id):
        status, answer = await interact(http, fake, bad)
        assert (status, answer["code"]) == (400, 50035), bad
    assert fake.pixverse_jobs == [] and fake.pixverse_interactions == []

    # Once the upload is completed, the same body goes through.
    async with http.put(upload_url, data=PNG) as resp:
        assert resp.status == 200
    assert (await interact(http, fake, image_body(fake, "animate", {"prompt": "p"}, "image", "cat.png", not_put)))[0] == 204

    # Moderation words apply to animate / meme_face prompts: one Banned prompt message, the group as content.
    fake.pixverse_moderated_words = {"gore"}
    await fake.wait_for_pixverse_idle()
    seen = len(fake.message_events)
    assert (await interact(http, fake, image_body(fake, "meme_face", {"prompt": "GORE face"}, "face", "cat.png", done)))[0] == 204
    assert (await interact(http, fake, image_body(fake, "animate", {"prompt": "gore", "motion": 2}, "image", "cat.png",
                                                  done)))[0] == 204
    await fake.wait_for_pixverse_idle()
    events = sorted((m for _, m in fake.message_events[seen:]), key=lambda m: m["content"])
    assert [(m["content"], m["embeds"][0]["title"], m["embeds"][0]["description"]) for m in events] == [
        (f"<@{USER_A}> (prompt: GORE face)", "Banned prompt", "GORE face"),
        (f"<@{USER_A}> (prompt: gore motion: 2)", "Banned prompt", "gore"),
    ]
    assert all(m["attachments"] == [] and m["components"] == [] and m["interaction_metadata"] for m in events)
    assert [j["state"] for j in fake.pixverse_jobs[-2:]] == ["moderated", "moderated"]


# --------------------------------------------------------------------------- a member's attachment to the bot's own command


async def test_member_attachment_is_resolved_and_served(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    fake.commands = [{
        "id": "970000000000000001", "application_id": str(BOT_ID), "version": "970000000000000002", "type": 1,
        "name": "video", "description": "Animate your picture",
        "options": [{"type": 11, "name": "picture", "description": "The picture", "required": True},
                    {"type": 3, "name": "prompt", "description": "The prompt", "required": False}],
    }]
    payload = fake.make_interaction("video", {"picture": MemberFile("my cat.png", PNG), "prompt": "go"},
                                    guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_A)
    (picture, prompt) = payload["data"]["options"]
    assert prompt == {"name": "prompt", "type": 3, "value": "go"}
    assert picture["type"] == 11 and picture["name"] == "picture" and picture["value"].isdigit()
    attachments = payload["data"]["resolved"]["attachments"]
    assert list(attachments) == [picture["value"]]
    att = attachments[picture["value"]]
    assert set(att) == {"id", "filename", "size", "url", "proxy_url", "content_type"}
    assert (att["id"], att["filename"], att["size"], att["content_type"]) == (picture["value"], "my cat.png", len(PNG), "image/png")
    assert att["url"].startswith(f"{fake.base_url}/cdn/attachments/{CHANNEL_ID}/{att['id']}/")
    assert att["proxy_url"].startswith(f"{fake.base_url}/media/attachments/{CHANNEL_ID}/{att['id']}/")
    for url in (att["url"], att["proxy_url"]):
        async with http.get(url) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            assert await resp.read() == PNG
    # Another attachment id or a wrong filename is not found.
    async with http.get(att["url"].replace(att["id"], "1")) as resp:
        assert resp.status == 404
    async with http.get(f"{fake.base_url}/cdn/attachments/{CHANNEL_ID}/{att['id']}/other.png") as resp:
        assert resp.status == 404

    # No content type: left out of the attachment object. A list option may carry a MemberFile too.
    payload = fake.make_interaction("video", [{"name": "picture", "value": MemberFile("raw.bin", b"\x00\x01", None)}],
                                    guild_id=GUILD_ID, channel_id=CHANNEL_ID)
    (picture,) = payload["data"]["options"]
    att = payload["data"]["resolved"]["attachments"][picture["value"]]
    assert picture["type"] == 11 and "content_type" not in att and att["size"] == 2
    async with http.get(att["url"]) as resp:
        assert resp.status == 200 and await resp.read() == b"\x00\x01"

    # Without a MemberFile there is nothing resolved; a MemberFile for a string option is a test bug.
    assert "resolved" not in fake.make_interaction("video", {"prompt": "p"}, guild_id=GUILD_ID, channel_id=CHANNEL_ID)["data"]
    with pytest.raises(AssertionError, match="'prompt' has type 3"):
        fake.make_interaction("video", {"prompt": MemberFile("x.png", b"x")}, guild_id=GUILD_ID, channel_id=CHANNEL_ID)


# --------------------------------------------------------------------------- history and the bot's own posts


async def test_history_pages_newest_first(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    url = f"{fake.api_base_url}/channels/{CHANNEL_ID}/messages"
    bot = f"Bot {BOT_TOKEN}"
    start = snowflake_at(time.time() - 1)
    ids = []
    for n in range(5):
        status, msg = await post(http, url, bot, {"content": f"update {n}"})
        assert status == 200 and msg["author"]["id"] == str(BOT_ID) and msg["author"]["bot"] is True
        ids.append(msg["id"])
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)

    async def page(**params: Any) -> list[str]:
        status, messages = await get(http, url, bot, **params)
        assert status == 200, messages
        return [m["id"] for m in messages]

    assert await page() == ids[::-1]
    assert await page(limit=2) == [ids[4], ids[3]]
    assert await page(after=ids[0], limit=2) == [ids[2], ids[1]]  # the oldest after, newest first
    assert await page(after=ids[2], limit=2) == [ids[4], ids[3]]
    assert await page(before=ids[2]) == [ids[1], ids[0]]
    assert await page(after=start) == ids[::-1]
    assert await page(after=ids[4]) == []
    assert await page(after=ids[0], before=ids[3], limit=1) == [ids[1]]
    assert await page(around=ids[2], limit=3) == [ids[3], ids[2], ids[1]]

    # A client paging forward from a time: always after the newest id seen.
    collected: list[str] = []
    cursor = start
    while batch := await page(after=cursor, limit=2):
        collected.extend(reversed(batch))
        cursor = max(int(i) for i in batch)
    assert collected == ids

    for bad in ({"limit": 0}, {"limit": 101}, {"after": "yesterday"}):
        status, answer = await get(http, url, bot, **bad)
        assert (status, answer["code"]) == (400, 50035)
    assert (await get(http, url, TOKEN_A))[0] == 401  # the user token never reads
    assert (await get(http, f"{fake.api_base_url}/channels/1/messages", bot))[0] == 404
    status, one = await get(http, f"{url}/{ids[1]}", bot)
    assert status == 200 and one["content"] == "update 1"
    assert (await get(http, f"{url}/1", bot))[0] == 404


async def test_bot_posts_keep_allowed_mentions_and_components(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    url = f"{fake.api_base_url}/channels/{CHANNEL_ID}/messages"
    bot = f"Bot {BOT_TOKEN}"
    row = [{"type": 1, "components": [{"type": 2, "style": 5, "label": "Video", "url": "https://example.invalid/v.mp4"}]}]
    status, quiet = await post(http, url, bot, {"content": f"<@{USER_A}> done", "allowed_mentions": {"parse": []}, "components": row})
    assert status == 200
    assert quiet["allowed_mentions"] == {"parse": []} and quiet["components"] == row and quiet["mentions"] == []
    status, loud = await post(http, url, bot, {"content": f"<@{USER_A}> done", "allowed_mentions": {"users": [str(USER_A)]},
                                               "message_reference": {"message_id": quiet["id"]}})
    assert status == 200 and [u["id"] for u in loud["mentions"]] == [str(USER_A)]
    assert loud["type"] == 19 and loud["message_reference"]["message_id"] == quiet["id"]
    assert fake.channel_messages[CHANNEL_ID] == [quiet, loud]
    assert [t for t, _ in fake.message_events] == ["MESSAGE_CREATE", "MESSAGE_CREATE"]
    assert await post(http, url, bot, {"content": ""}) == (400, {"message": "Cannot send an empty message", "code": 50006})
    assert (await post(http, url, TOKEN_A, {"content": "x"}))[0] == 401


# --------------------------------------------------------------------------- hold / release and the counters


async def test_hold_release_and_executing_counters(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    fake.pixverse_hold = True
    for n in range(3):
        assert (await interact(http, fake, command_body(fake, "create", {"prompt": f"job {n}", "style": "Anime"}), TOKEN_A))[0] == 204
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "job b", "style": "Anime"}, channel_id=CHANNEL_2_ID),
                           TOKEN_B))[0] == 204
    # Counted from the 204, before PixVerse posted anything.
    assert fake.pixverse_executing == {USER_A: 3, USER_B: 1}

    await fake.wait_for_pixverse_held(4)
    assert fake.pixverse_held == 4
    assert fake.pixverse_max_executing == {USER_A: 3, USER_B: 1}
    assert all(m["content"].endswith("(37%)") for m in fake.channel_messages[CHANNEL_ID])
    assert len(fake.channel_messages[CHANNEL_ID]) == 3 and len(fake.channel_messages[CHANNEL_2_ID]) == 1
    with pytest.raises(AssertionError, match="not idle"):
        await fake.wait_for_pixverse_idle(timeout=0.1)

    # Release the oldest one: job 0 finishes, the others stay.
    assert fake.pixverse_release(1) == 1
    final = await fake.wait_for_channel_message(CHANNEL_ID, is_final)
    assert "prompt: job 0 " in final["content"]
    assert fake.pixverse_executing == {USER_A: 2, USER_B: 1} and fake.pixverse_held == 3

    # Stop holding; the held ones still need a release, new jobs run straight through.
    fake.pixverse_hold = False
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "job 3", "style": "Anime"}), TOKEN_A))[0] == 204
    await fake.wait_for_channel_message(CHANNEL_ID, lambda m: is_final(m) and "prompt: job 3 " in m["content"])
    assert fake.pixverse_held == 3
    assert fake.pixverse_release() == 3
    await fake.wait_for_pixverse_idle()
    assert fake.pixverse_executing == {USER_A: 0, USER_B: 0}
    assert fake.pixverse_max_executing == {USER_A: 3, USER_B: 1}
    assert sorted(j["prompt"] for j in fake.pixverse_jobs if j["state"] == "completed") == ["job 0", "job 1", "job 2", "job 3", "job b"]
    assert fake.pixverse_release() == 0


# --------------------------------------------------------------------------- over the gateway


class Observer(discord.Client):
    """A minimal bot that records what PixVerse's messages look like to discord.py."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.edits: asyncio.Queue[discord.RawMessageUpdateEvent] = asyncio.Queue()

    async def on_message(self, message: discord.Message) -> None:
        await self.messages.put(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.edits.put(payload)


class Receiver(Observer):
    """The observer plus one slash command taking a member's attachment: it downloads it and tells what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(name="inspect", description="Download the picture and describe it")
        async def inspect(interaction: discord.Interaction, picture: discord.Attachment, note: str = "") -> None:
            data = await picture.read()
            await interaction.response.send_message(
                f"{picture.id} {picture.filename} {picture.content_type} {picture.size} {len(data)} "
                f"{hashlib.sha256(data).hexdigest()} {note}"
            )

    async def setup_hook(self) -> None:
        await self.tree.sync()


@contextlib.asynccontextmanager
async def connected(fake: FakeDiscord, client: discord.Client) -> AsyncIterator[discord.Client]:
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    connect_task: asyncio.Task | None = None
    try:
        await client.login(BOT_TOKEN)
        connect_task = asyncio.create_task(client.connect(reconnect=False))
        await asyncio.wait_for(client.wait_until_ready(), timeout=10)
        yield client
    finally:
        await client.close()
        if connect_task is not None:
            await asyncio.wait_for(connect_task, timeout=10)
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@pytest.fixture
async def observer(fake: FakeDiscord) -> AsyncIterator[Observer]:
    async with connected(fake, Observer()) as client:
        yield client


async def next_item(queue: asyncio.Queue) -> Any:
    return await asyncio.wait_for(queue.get(), timeout=10)


async def test_discord_py_receives_pixverse_messages(fake: FakeDiscord, http: aiohttp.ClientSession, observer: Observer) -> None:
    since = discord.Object(id=snowflake_at(time.time() - 1))
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "blue whale", "style": "Realistic"})))[0] == 204
    h = head(USER_A, "blue whale", "Realistic")

    waiting = await next_item(observer.messages)
    assert waiting.author.id == PIXVERSE_APPLICATION_ID and waiting.author.bot
    assert waiting.content == f"{h} (Waiting to start)" and waiting.type is discord.MessageType.chat_input_command
    assert waiting.guild is not None and waiting.guild.id == GUILD_ID and waiting.channel.id == CHANNEL_ID
    assert waiting.interaction_metadata is not None and waiting.interaction_metadata.user.id == USER_A

    edit = await next_item(observer.edits)
    assert edit.message_id == waiting.id and edit.data["content"] == f"{h} (37%)"
    assert edit.message.content == f"{h} (37%)" and edit.message.author.id == PIXVERSE_APPLICATION_ID

    final = await next_item(observer.messages)
    assert final.author.id == PIXVERSE_APPLICATION_ID and final.content == f"{h} Author: <@{USER_A}>"
    assert final.interaction_metadata is None and [u.id for u in final.mentions] == [USER_A]
    assert [(a.filename, a.content_type) for a in final.attachments] == [(f"pixverse_{i}.mp4", "video/mp4") for i in range(1, 5)]
    labels = [[c.label or str(c.emoji) for c in row.children] for row in final.components]
    assert labels == [["U1", "U2", "U3", "U4"], ["V1", "V2", "V3", "V4"], ["ReDo", SHUFFLE]]
    assert all(isinstance(c, discord.Button) and c.custom_id for row in final.components for c in row.children)

    # A button press: the replies reference the result.
    shuffle = final.components[2].children[1]
    raw_final = fake.find_channel_message(CHANNEL_ID, final.id)
    assert raw_final is not None
    body = button_body(raw_final, SHUFFLE)
    assert body["data"]["custom_id"] == shuffle.custom_id
    assert (await interact(http, fake, body))[0] == 204
    reply = await next_item(observer.messages)
    assert reply.type is discord.MessageType.reply and reply.reference is not None and reply.reference.message_id == final.id
    assert reply.interaction_metadata is not None and reply.interaction_metadata.type is discord.InteractionType.component
    await next_item(observer.edits)
    reply_final = await next_item(observer.messages)
    assert len(reply_final.attachments) == 4 and reply_final.reference is not None
    await fake.wait_for_pixverse_idle()

    # The bot posts an update, sees its own message, and reads the history back in order.
    channel = observer.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send(f"<@{USER_A}> your video is ready", allowed_mentions=discord.AllowedMentions(users=False))
    assert sent.author.id == BOT_ID and sent.mentions == []
    own = await next_item(observer.messages)
    assert own.id == sent.id and own.author.id == BOT_ID
    stored = fake.find_channel_message(CHANNEL_ID, sent.id)
    assert stored is not None and "users" not in stored["allowed_mentions"]["parse"]

    history = [m async for m in channel.history(after=since, oldest_first=True)]
    assert [m.id for m in history] == [int(m["id"]) for m in fake.channel_messages[CHANNEL_ID]]
    assert [m.id for m in history] == [waiting.id, final.id, reply.id, reply_final.id, sent.id]
    assert history[1].attachments[0].url == final.attachments[0].url


async def test_message_events_follow_the_intents(fake: FakeDiscord, http: aiohttp.ClientSession) -> None:
    """Without MESSAGE_CONTENT a bot gets PixVerse's messages empty; without GUILD_MESSAGES not at all."""

    async def identify(intents: int) -> aiohttp.ClientWebSocketResponse:
        ws = await http.ws_connect(fake.gateway_url + "?v=10&encoding=json")
        assert (await ws.receive_json(timeout=10))["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": BOT_TOKEN, "intents": intents, "properties": {}}})
        while (await ws.receive_json(timeout=10)).get("t") != "GUILD_CREATE":
            pass
        return ws

    async def events_until_marker(ws: aiohttp.ClientWebSocketResponse) -> list[dict]:
        frames = []
        while (frame := await ws.receive_json(timeout=10))["t"] != "MARKER":
            frames.append(frame)
        return frames

    full = await identify(1 | 1 << 9 | 1 << 15)
    no_content = await identify(1 | 1 << 9)
    no_messages = await identify(1)
    assert (await interact(http, fake, command_body(fake, "create", {"prompt": "owl", "style": "Anime"})))[0] == 204
    await fake.wait_for_pixverse_idle()
    await fake.send_event("MARKER", {})

    got_full = await events_until_marker(full)
    assert [f["t"] for f in got_full if f["t"].startswith("MESSAGE_")] == ["MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_CREATE"]
    assert len(got_full[-1]["d"]["attachments"]) == 4 and got_full[-1]["d"]["content"].startswith(f"<@{USER_A}>")
    got_empty = [f for f in await events_until_marker(no_content) if f["t"].startswith("MESSAGE_")]
    assert len(got_empty) == 3
    assert all((f["d"]["content"], f["d"]["attachments"], f["d"]["components"]) == ("", [], []) for f in got_empty)
    assert all(f["d"]["author"]["id"] == str(PIXVERSE_APPLICATION_ID) for f in got_empty)
    assert [f["t"] for f in await events_until_marker(no_messages) if f["t"].startswith("MESSAGE_")] == []
    for ws in (full, no_content, no_messages):
        await ws.close()


async def test_discord_py_reads_a_member_attachment(fake: FakeDiscord) -> None:
    async with connected(fake, Receiver()):
        result = await fake.invoke("inspect", {"picture": MemberFile("cat.png", PNG), "note": "hi"},
                                   guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_A)
        ((att_id, att),) = result.payload["data"]["resolved"]["attachments"].items()
        assert result.callback_type == 4
        assert result.content == f"{att_id} cat.png image/png {len(PNG)} {len(PNG)} {hashlib.sha256(PNG).hexdigest()} hi"
        # discord.py downloaded it from the fake CDN, with the whole signed URL.
        (download,) = [r for r in fake.requests if r.path.startswith("/cdn/")]
        assert (download.method, download.path) == ("GET", f"/cdn/attachments/{CHANNEL_ID}/{att_id}/cat.png")
        assert download.status == 200 and att["url"].endswith("&") and set(download.query) == {"ex", "is", "hm"}
