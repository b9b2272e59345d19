"""Asks Discord whether an account token is alive, and whose it is."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp

from bot.errors import ApiError, bad_request

log = logging.getLogger(__name__)

# Anything else cannot be a token and must not be put in an HTTP header (a newline
# would be a header injection; aiohttp would raise on it). The user-API client uses it too.
TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,512}")

INVALID_TOKEN = "Required param discord is not a valid Discord token"
UNREACHABLE = "Discord could not be reached to check the discord token; nothing was saved, try again later"


class DiscordTokenChecker:
    """``GET {DISCORD_API_BASE_URL}/users/@me`` with the token, as the account itself."""

    def __init__(self, api_base_url: str, *, timeout: float = 10.0) -> None:
        self._url = api_base_url.rstrip("/") + "/users/@me"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def user_id(self, token: str) -> str:
        """The Discord user id the token belongs to; :class:`ApiError` 400 or 503 otherwise."""
        if not TOKEN_CHARS.fullmatch(token):
            raise bad_request(INVALID_TOKEN, "The value has characters a Discord token never has")
        try:
            async with self._client().get(self._url, headers={"Authorization": token}) as resp:
                status = resp.status
                data = await resp.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            # The exception's text can carry the URL, never the token: headers are not in it.
            log.warning("Token check could not reach Discord: %s", type(exc).__name__)
            raise ApiError(503, UNREACHABLE, type(exc).__name__) from None
        if status == 200:
            user_id = str(data.get("id", "")) if isinstance(data, dict) else ""
            if not re.fullmatch(r"[0-9]{1,20}", user_id):
                raise ApiError(503, UNREACHABLE, "Discord answered without a user id")
            return user_id
        if status in (401, 403):
            raise bad_request(INVALID_TOKEN, f"Discord answered {status} to GET /users/@me")
        if status == 429 or status >= 500:
            raise ApiError(503, UNREACHABLE, f"Discord answered {status}")
        raise bad_request(INVALID_TOKEN, f"Discord answered {status} to GET /users/@me")
