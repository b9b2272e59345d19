"""API tokens on PostgreSQL: the statements of :class:`bot.store.tokens.CachedTokens`, and a
revocation that reaches every process at once (``NOTIFY`` in the revoking transaction)."""

from __future__ import annotations

from bot.store import TOKENS_REVOKED_TOPIC
from bot.store.postgres.database import Database, channel_of
from bot.store.tokens import CachedTokens


class ApiTokenRepository(CachedTokens):
    _db: Database

    async def _insert(self, token_hash: str, guild_id: str, created_by: str, now: float) -> None:
        await self._db.execute(
            "INSERT INTO api_tokens (token_hash, guild_id, created_by, created_at) VALUES ($1, $2, $3, $4)",
            token_hash, guild_id, created_by, now,
        )

    async def _live_guild(self, token_hash: str) -> str | None:
        return await self._db.fetchval(
            "SELECT guild_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", token_hash
        )

    async def _revoke(self, guild_id: str, now: float) -> int:
        async with self._db.transaction() as conn:
            count = await conn.fetchval(
                "WITH revoked AS (UPDATE api_tokens SET revoked_at = $1 WHERE guild_id = $2 AND revoked_at IS NULL"
                " RETURNING 1) SELECT COUNT(*) FROM revoked", now, guild_id,
            )
            # Delivered to every listening process when this transaction commits, not before.
            await conn.execute("SELECT pg_notify($1, $2)", channel_of(TOKENS_REVOKED_TOPIC), guild_id)
        return int(count)
