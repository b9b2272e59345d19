"""Account configurations on PostgreSQL. Every query is scoped by the server that owns the row."""

from __future__ import annotations

import time
from dataclasses import fields

import asyncpg

from bot.accounts.crypto import TokenCipher
from bot.accounts.models import AccountConfig
from bot.store import ChannelOwnedElsewhere, duplicate_of
from bot.store.postgres.database import Database

_FIELDS = tuple(f.name for f in fields(AccountConfig))
_COLUMNS = ", ".join(_FIELDS)

UPSERT_SQL = (
    "INSERT INTO accounts (channel_id, guild_id, token_encrypted, token_hash, token_last4,"
    " discord_user_id, max_jobs, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
    " ON CONFLICT (channel_id) DO UPDATE SET"
    " token_encrypted = excluded.token_encrypted, token_hash = excluded.token_hash,"
    " token_last4 = excluded.token_last4, discord_user_id = excluded.discord_user_id,"
    " max_jobs = excluded.max_jobs, updated_at = excluded.updated_at,"
    " in_rotation = TRUE, error = NULL, error_details = NULL, consecutive_failures = 0"
    # A channel stays with its server: when another server owns it, nothing is written.
    " WHERE accounts.guild_id = excluded.guild_id"
    f" RETURNING {_COLUMNS}"
)


def account_from_row(row: asyncpg.Record) -> AccountConfig:
    return AccountConfig(*row)


class AccountRepository:
    def __init__(self, db: Database, cipher: TokenCipher) -> None:
        self._db = db
        self._cipher = cipher

    async def _one(self, where: str, *args: object) -> AccountConfig | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE {where}", *args)
        return None if row is None else account_from_row(row)

    async def get(self, guild_id: str, channel_id: str) -> AccountConfig | None:
        return await self._one("guild_id = $1 AND channel_id = $2", guild_id, channel_id)

    async def list(self, guild_id: str) -> list[AccountConfig]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM accounts WHERE guild_id = $1 ORDER BY created_at, channel_id", guild_id
        )
        return [account_from_row(row) for row in rows]

    async def find_by_token(self, token: str) -> AccountConfig | None:
        return await self._one("token_hash = $1", self._cipher.fingerprint(token))

    async def find_by_user(self, discord_user_id: str) -> AccountConfig | None:
        return await self._one("discord_user_id = $1", discord_user_id)

    async def upsert(
        self, *, guild_id: str, channel_id: str, token: str, discord_user_id: str, max_jobs: int
    ) -> AccountConfig:
        """Creates or replaces the channel's configuration in one statement; the unique indexes
        are the final word on duplicates (a concurrent save of the same token elsewhere fails
        here and nothing is written)."""
        try:
            row = await self._db.fetchrow(
                UPSERT_SQL, channel_id, guild_id, self._cipher.encrypt(token), self._cipher.fingerprint(token),
                token[-4:], discord_user_id, max_jobs, time.time(),
            )
        except asyncpg.UniqueViolationError:
            duplicate = await duplicate_of(self, token=token, discord_user_id=discord_user_id, channel_id=channel_id)
            if duplicate is not None:
                raise duplicate from None
            raise
        if row is None:
            raise ChannelOwnedElsewhere(channel_id)
        return account_from_row(row)

    async def delete(self, guild_id: str, channel_id: str) -> bool:
        return await self._db.execute(
            "DELETE FROM accounts WHERE guild_id = $1 AND channel_id = $2", guild_id, channel_id
        ) > 0

    async def set_rotation(self, guild_id: str, channel_id: str, *, in_rotation: bool, error: str | None = None,
                           error_details: str | None = None) -> bool:
        # Taking out changes only an account in rotation: True for the one call that took it out.
        return await self._db.execute(
            "UPDATE accounts SET in_rotation = $1, error = $2, error_details = $3, consecutive_failures = 0,"
            " updated_at = $4 WHERE guild_id = $5 AND channel_id = $6" + ("" if in_rotation else " AND in_rotation"),
            in_rotation, error, error_details, time.time(), guild_id, channel_id,
        ) > 0

    async def record_failure(self, channel_id: str) -> int:
        count = await self._db.fetchval(
            "UPDATE accounts SET consecutive_failures = consecutive_failures + 1 WHERE channel_id = $1"
            " RETURNING consecutive_failures", channel_id,
        )
        return 0 if count is None else int(count)

    async def record_success(self, channel_id: str) -> None:
        await self._db.execute(
            "UPDATE accounts SET consecutive_failures = 0 WHERE channel_id = $1 AND consecutive_failures > 0",
            channel_id,
        )

    async def in_rotation_count(self, guild_id: str) -> int:
        return int(await self._db.fetchval(
            "SELECT COUNT(*) FROM accounts WHERE guild_id = $1 AND in_rotation", guild_id
        ))

    async def rotation_counts(self) -> tuple[int, int]:
        row = await self._db.fetchrow(
            "SELECT COUNT(*) FILTER (WHERE in_rotation), COUNT(*) FILTER (WHERE NOT in_rotation) FROM accounts"
        )
        return int(row[0]), int(row[1])

    async def channel_ids(self) -> set[str]:
        return {row[0] for row in await self._db.fetch("SELECT channel_id FROM accounts")}

    async def decrypt_token(self, guild_id: str, channel_id: str) -> str | None:
        """The clear token, for the code that acts with it; never for display."""
        encrypted = await self._db.fetchval(
            "SELECT token_encrypted FROM accounts WHERE guild_id = $1 AND channel_id = $2", guild_id, channel_id
        )
        return None if encrypted is None else self._cipher.decrypt(encrypted)
