"""SQL for account configurations. Every query is scoped by the server that owns the row."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import aiosqlite

from bot.accounts.crypto import TokenCipher
from bot.accounts.models import AccountConfig

_COLUMNS = "guild_id, channel_id, discord_user_id, token_last4, max_jobs, created_at, updated_at"


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DuplicateAccount(Exception):
    """Raised when the token (or its Discord user) is configured in another channel."""

    def __init__(self, other: AccountConfig) -> None:
        super().__init__(other.channel_id)
        self.other = other


class ChannelOwnedElsewhere(Exception):
    """The channel's configuration belongs to another server."""


class AccountRepository:
    def __init__(self, conn: aiosqlite.Connection, cipher: TokenCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    @staticmethod
    def _row(row: aiosqlite.Row) -> AccountConfig:
        return AccountConfig(
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            discord_user_id=row["discord_user_id"],
            token_last4=row["token_last4"],
            max_jobs=row["max_jobs"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def _one(self, where: str, params: tuple) -> AccountConfig | None:
        async with self._conn.execute(f"SELECT {_COLUMNS} FROM accounts WHERE {where}", params) as cur:
            row = await cur.fetchone()
        return None if row is None else self._row(row)

    async def get(self, guild_id: str, channel_id: str) -> AccountConfig | None:
        return await self._one("guild_id = ? AND channel_id = ?", (guild_id, channel_id))

    async def list(self, guild_id: str) -> list[AccountConfig]:
        async with self._conn.execute(
            f"SELECT {_COLUMNS} FROM accounts WHERE guild_id = ? ORDER BY created_at, channel_id", (guild_id,)
        ) as cur:
            return [self._row(row) for row in await cur.fetchall()]

    async def find_by_token(self, token: str) -> AccountConfig | None:
        """The configuration using this token anywhere in the bot (a keyed-hash lookup)."""
        return await self._one("token_hash = ?", (self._cipher.fingerprint(token),))

    async def find_by_user(self, discord_user_id: str) -> AccountConfig | None:
        return await self._one("discord_user_id = ?", (discord_user_id,))

    async def owner_of(self, channel_id: str) -> str | None:
        async with self._conn.execute("SELECT guild_id FROM accounts WHERE channel_id = ?", (channel_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def upsert(
        self, *, guild_id: str, channel_id: str, token: str, discord_user_id: str, max_jobs: int
    ) -> AccountConfig:
        """Creates or replaces the channel's configuration in one statement.

        The unique indexes are the final word on duplicates: a concurrent save of the same
        token elsewhere fails here and nothing is written.
        """
        now = utcnow()
        try:
            async with self._conn.execute(
                "INSERT INTO accounts (channel_id, guild_id, token_encrypted, token_hash, token_last4,"
                " discord_user_id, max_jobs, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(channel_id) DO UPDATE SET"
                " token_encrypted = excluded.token_encrypted, token_hash = excluded.token_hash,"
                " token_last4 = excluded.token_last4, discord_user_id = excluded.discord_user_id,"
                " max_jobs = excluded.max_jobs, updated_at = excluded.updated_at"
                " WHERE accounts.guild_id = excluded.guild_id"
                f" RETURNING {_COLUMNS}",
                (
                    channel_id,
                    guild_id,
                    self._cipher.encrypt(token),
                    self._cipher.fingerprint(token),
                    token[-4:],
                    discord_user_id,
                    max_jobs,
                    now,
                    now,
                ),
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.IntegrityError:
            other = await self.find_by_token(token) or await self.find_by_user(discord_user_id)
            if other is not None and other.channel_id != channel_id:
                raise DuplicateAccount(other) from None
            raise
        if row is None:
            # The WHERE of the upsert refused: the channel is another server's.
            raise ChannelOwnedElsewhere(channel_id)
        return self._row(row)

    async def delete(self, guild_id: str, channel_id: str) -> bool:
        async with self._conn.execute(
            "DELETE FROM accounts WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        ) as cur:
            return cur.rowcount > 0

    async def decrypt_token(self, guild_id: str, channel_id: str) -> str | None:
        """The clear token, for the code that acts with it; never for display."""
        async with self._conn.execute(
            "SELECT token_encrypted FROM accounts WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else self._cipher.decrypt(row[0])


async def verify_cipher(conn: aiosqlite.Connection, cipher: TokenCipher) -> bool:
    """True when the key in use is the database's key; records it on a new database.

    Checked at startup so a wrong or lost key is a clear error then, not a silent
    failure the first time a stored token is needed.
    """
    from bot.accounts.crypto import KEY_CHECK_META
    from bot.db import get_meta, set_meta

    stored = await get_meta(conn, KEY_CHECK_META)
    if stored is None:
        async with conn.execute("SELECT token_encrypted FROM accounts LIMIT 1") as cur:
            row = await cur.fetchone()
        if row is not None:
            try:
                cipher.decrypt(row[0])
            except Exception:
                return False
        await set_meta(conn, KEY_CHECK_META, cipher.key_check())
        return True
    return cipher.verify_key_check(stored)
