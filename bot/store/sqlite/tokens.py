"""API tokens on SQLite: the statements of :class:`bot.store.tokens.CachedTokens`."""

from __future__ import annotations

from bot.store.sqlite.database import Database
from bot.store.tokens import CACHE_SECONDS, TOKEN_PREFIX, CachedTokens, hash_token

__all__ = ["ApiTokenRepository", "CACHE_SECONDS", "TOKEN_PREFIX", "hash_token"]


class ApiTokenRepository(CachedTokens):
    _db: Database

    async def _insert(self, token_hash: str, guild_id: str, created_by: str, now: float) -> None:
        await self._db.execute(
            "INSERT INTO api_tokens (token_hash, guild_id, created_by, created_at) VALUES (?, ?, ?, ?)",
            (token_hash, guild_id, created_by, now),
        )

    async def _live_guild(self, token_hash: str) -> str | None:
        row = await self._db.lookup_one(
            "SELECT guild_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,)
        )
        return None if row is None else row[0]

    async def _revoke(self, guild_id: str, now: float) -> int:
        return await self._db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE guild_id = ? AND revoked_at IS NULL", (now, guild_id)
        )
