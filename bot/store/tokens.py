"""HTTP API tokens, engine-neutral: made here, shown once, kept by the adapter only as a hash.

Every API request asks which server its token belongs to, and a database round trip costs more
than the route's own work, so the answer is remembered for ``CACHE_SECONDS``. A revocation in
this process clears it at once. One made by another process sharing the database reaches this
one through the adapter's notification (PostgreSQL's ``NOTIFY``: :meth:`forget` at once) or, where
there is none (SQLite) or while it is down, within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

TOKEN_PREFIX = "pvb_"
CACHE_SECONDS = 5.0
CACHED_TOKENS = 10_000  # bounded: unknown tokens are never cached


def hash_token(token: str) -> str:
    # A 256-bit random token needs no slow hash: SHA-256 cannot be reversed or guessed.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class CachedTokens:
    """The TokenStore's logic; an adapter subclasses it with its statements."""

    def __init__(self, db: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db  # the adapter's database, for its statements
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}  # token hash -> (guild id, expiry)
        # Bumped around every revocation: a lookup that raced with one is not cached.
        self._generation = 0

    # --- the adapter's statements ---------------------------------------------------------

    async def _insert(self, token_hash: str, guild_id: str, created_by: str, now: float) -> None:
        raise NotImplementedError

    async def _live_guild(self, token_hash: str) -> str | None:
        raise NotImplementedError

    async def _revoke(self, guild_id: str, now: float) -> int:
        raise NotImplementedError

    # --- the port -------------------------------------------------------------------------

    async def create(self, guild_id: str, created_by: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._insert(hash_token(token), guild_id, created_by, time.time())
        return token

    async def guild_of(self, token: str) -> str | None:
        """The server a live token belongs to; None for unknown or revoked tokens."""
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        generation = self._generation
        guild_id = await self._live_guild(token_hash)
        if guild_id is None:
            self._cache.pop(token_hash, None)
            return None
        if generation == self._generation:  # no revocation started or ended meanwhile
            if len(self._cache) >= CACHED_TOKENS:
                self._cache.clear()
            self._cache[token_hash] = (guild_id, self._clock() + CACHE_SECONDS)
        return guild_id

    def forget(self, guild_id: str | None = None) -> None:
        """Drops what is remembered of a server's tokens (every server's with None)."""
        self._generation += 1
        if guild_id is None:
            self._cache = {}
        else:
            self._cache = {h: entry for h, entry in self._cache.items() if entry[0] != guild_id}

    async def revoke_all(self, guild_id: str) -> int:
        self.forget(guild_id)
        try:
            return await self._revoke(guild_id, time.time())
        finally:
            self.forget(guild_id)  # a lookup that read the row before the revocation is not kept
