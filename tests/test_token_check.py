"""The token check against a local stand-in for Discord's /users/@me."""

from __future__ import annotations

import pytest
from aiohttp import web

from bot.accounts.token_check import INVALID_TOKEN, UNREACHABLE, DiscordTokenChecker
from bot.errors import ApiError


@pytest.fixture
async def discord_api(aiohttp_unused_port=None):
    state = {"status": 200, "body": {"id": "700000000000000001", "username": "acct"}, "seen": []}

    async def users_me(request: web.Request) -> web.Response:
        state["seen"].append(request.headers.get("Authorization"))
        return web.json_response(state["body"], status=state["status"])

    app = web.Application()
    app.router.add_get("/api/v10/users/@me", users_me)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state["base"] = f"http://127.0.0.1:{port}/api/v10"
    yield state
    await runner.cleanup()


async def check(base: str, token: str) -> str:
    checker = DiscordTokenChecker(base, timeout=2)
    try:
        return await checker.user_id(token)
    finally:
        await checker.close()


async def test_valid_token_gives_the_user_id_and_is_sent_raw(discord_api):
    assert await check(discord_api["base"], "user-token-abc") == "700000000000000001"
    assert discord_api["seen"] == ["user-token-abc"]


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_token_is_400(discord_api, status):
    discord_api["status"] = status
    with pytest.raises(ApiError) as info:
        await check(discord_api["base"], "dead-token")
    assert (info.value.code, info.value.error) == (400, INVALID_TOKEN)
    assert "dead-token" not in str(info.value) + (info.value.error_details or "")


@pytest.mark.parametrize("status", [500, 502, 429])
async def test_discord_trouble_is_503(discord_api, status):
    discord_api["status"] = status
    with pytest.raises(ApiError) as info:
        await check(discord_api["base"], "token")
    assert (info.value.code, info.value.error) == (503, UNREACHABLE)


async def test_unreachable_discord_is_503():
    with pytest.raises(ApiError) as info:
        await check("http://127.0.0.1:9/api/v10", "token")
    assert (info.value.code, info.value.error) == (503, UNREACHABLE)


@pytest.mark.parametrize("token", ["with space", "new\nline", "ünïcode", "x" * 600])
async def test_impossible_tokens_are_refused_without_asking_discord(discord_api, token):
    with pytest.raises(ApiError) as info:
        await check(discord_api["base"], token)
    assert (info.value.code, info.value.error) == (400, INVALID_TOKEN)
    assert discord_api["seen"] == []
