"""API tokens: created per server, shown once, stored as a hash."""

from __future__ import annotations

import hashlib
import secrets

from bot.accounts.repository import utcnow
from bot.db import Database

TOKEN_PREFIX = "pvb_"


def hash_token(token: str) -> str:
    # A 256-bit random token needs no slow hash: SHA-256 cannot be reversed or guessed.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiTokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, guild_id: str, created_by: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._db.execute(
            "INSERT INTO api_tokens (token_hash, guild_id, created_by, created_at) VALUES (?, ?, ?, ?)",
            (hash_token(token), guild_id, created_by, utcnow()),
        )
        return token

    async def guild_of(self, token: str) -> str | None:
        """The server a live token belongs to; None for unknown or revoked tokens."""
        row = await self._db.fetchone(
            "SELECT guild_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL", (hash_token(token),)
        )
        return None if row is None else row[0]

    async def revoke_all(self, guild_id: str) -> int:
        return await self._db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE guild_id = ? AND revoked_at IS NULL", (utcnow(), guild_id)
        )
