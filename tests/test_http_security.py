"""replyUrl never reaches private addresses; token revocation is never undone by the cache."""

from __future__ import annotations

import asyncio

import pytest

from bot.dispatch.validation import validate_reply
from bot.errors import ApiError
from bot.web.callbacks import PublicOnlyResolver
from bot.store.sqlite.tokens import ApiTokenRepository


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://localhost/hook", "http://10.1.2.3/",
     "http://192.168.0.10/", "http://169.254.169.254/latest/meta-data", "http://api.localhost/x"],
)
def test_reply_urls_to_private_or_local_addresses_are_refused(url):
    with pytest.raises(ApiError) as info:
        validate_reply({"replyUrl": url})
    assert (info.value.code, info.value.error) == (400, f"Param replyUrl ({url}) points to a private or local address")
    assert validate_reply({"replyUrl": url}, allow_private=True) == {"replyUrl": url}


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "http:///nohost", "http://x:99999/",
                                 "http://[::1", "http://[x]/", "http://a]b/"])  # urlsplit raises on the last three
def test_reply_urls_must_be_http(url):
    with pytest.raises(ApiError) as info:
        validate_reply({"replyUrl": url})
    assert info.value.error == f"Param replyUrl ({url}) is not an http(s) URL"


@pytest.mark.parametrize("name, body", [("replyRef", {"replyRef": "ref\x00"}),
                                        ("replyUrl", {"replyUrl": "https://example.com/ho\x00ok"})])
def test_a_nul_character_in_reply_params_is_refused(name, body):
    with pytest.raises(ApiError) as info:
        validate_reply(body)
    assert (info.value.code, info.value.error) == (400, f"Param {name} must not contain a NUL character")
    with pytest.raises(ApiError) as info:
        validate_reply({name: body[name].replace("\x00", "\ud800")})  # what no engine can encode either
    assert (info.value.code, info.value.error) == (400, f"Param {name} must be text")


def test_public_reply_url_and_ref_are_kept():
    assert validate_reply({"replyUrl": "https://example.com/hook", "replyRef": "r1"}) == {
        "replyUrl": "https://example.com/hook", "replyRef": "r1"
    }


async def test_names_resolving_to_loopback_are_refused_at_connect_time():
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="resolves only to private or local addresses"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


class _SlowDb:
    """A token table whose SELECT waits until the test lets it answer."""

    def __init__(self) -> None:
        self.revoked = False
        self.release_select = asyncio.Event()

    async def lookup_one(self, sql, params=()):
        answer = None if self.revoked else ("111111111111111111",)
        await self.release_select.wait()
        return answer

    async def execute(self, sql, params=()):
        self.revoked = True
        return 1


async def test_a_lookup_racing_a_revocation_is_not_cached():
    db = _SlowDb()
    tokens = ApiTokenRepository(db)
    lookup = asyncio.create_task(tokens.guild_of("pvb_token"))
    await asyncio.sleep(0)  # the SELECT has read the row as it was before the revoke
    assert await tokens.revoke_all("111111111111111111") == 1
    db.release_select.set()
    assert await lookup == "111111111111111111"  # that request started before the revoke
    assert await tokens.guild_of("pvb_token") is None  # but nothing stale was cached
