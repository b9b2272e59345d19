"""API tokens: created per server, shown once, stored as a hash."""

from __future__ import annotations

import hashlib
import secrets
import time

from bot.store.sqlite.accounts import utcnow
from bot.store.sqlite.database import Database

TOKEN_PREFIX = "pvb_"


def hash_token(token: str) -> str:
    # A 256-bit random token needs no slow hash: SHA-256 cannot be reversed or guessed.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# A token's server is remembered this long: every API request asks, and a database
# round trip costs more than the route's own work. Revoking here clears it at once;
# a revocation made by another process sharing the database takes effect within this.
CACHE_SECONDS = 5.0


class ApiTokenRepository:
    def __init__(self, db: Database, *, clock=time.monotonic) -> None:
        self._db = db
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}  # token hash -> (guild id, expiry)
        # Bumped around every revocation: a lookup that raced with one is not cached.
        self._generation = 0

    async def create(self, guild_id: str, created_by: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._db.execute(
            "INSERT INTO api_tokens (token_hash, guild_id, created_by, created_at) VALUES (?, ?, ?, ?)",
            (hash_token(token), guild_id, created_by, utcnow()),
        )
        return token

    async def guild_of(self, token: str) -> str | None:
        """The server a live token belongs to; None for unknown or revoked tokens."""
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        generation = self._generation
        row = await self._db.lookup_one(
            "SELECT guild_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,)
        )
        if row is None:
            self._cache.pop(token_hash, None)
            return None
        if generation == self._generation:  # no revocation started or ended meanwhile
            if len(self._cache) > 10_000:  # bounded: unknown tokens are never cached
                self._cache.clear()
            self._cache[token_hash] = (row[0], self._clock() + CACHE_SECONDS)
        return row[0]

    def _forget(self, guild_id: str) -> None:
        self._generation += 1
        self._cache = {h: entry for h, entry in self._cache.items() if entry[0] != guild_id}

    async def revoke_all(self, guild_id: str) -> int:
        self._forget(guild_id)
        try:
            return await self._db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE guild_id = ? AND revoked_at IS NULL", (utcnow(), guild_id)
            )
        finally:
            self._forget(guild_id)  # a lookup that read the row before the UPDATE is not kept
