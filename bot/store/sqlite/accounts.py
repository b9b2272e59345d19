"""SQL for account configurations. Every query is scoped by the server that owns the row."""

from __future__ import annotations

import sqlite3
from dataclasses import fields
import time

from bot.accounts.crypto import TokenCipher
from bot.accounts.models import AccountConfig
from bot.store import ChannelOwnedElsewhere, duplicate_of
from bot.store.sqlite.database import Database, IntegrityError


def utcnow() -> float:
    """Every timestamp the store keeps: seconds since the Unix epoch (UTC), a REAL column."""
    return time.time()


LIST_CACHE_SERVERS = 1_000  # servers whose list is remembered at once; more start it afresh; 0: none


# The columns are named as AccountConfig's fields and selected in their order, so a row
# maps by position: sqlite3.Row's lookup by name is a scan per field.
_FIELDS = tuple(f.name for f in fields(AccountConfig))
_COLUMNS = ", ".join(_FIELDS)
_IN_ROTATION = _FIELDS.index("in_rotation")

# Parameters: channel_id, guild_id, token_encrypted, token_hash, token_last4, discord_user_id,
# max_jobs, created_at, updated_at. The WHERE keeps a channel with its server: when another
# server owns the channel, nothing is written and nothing returned.
UPSERT_SQL = (
    "INSERT INTO accounts (channel_id, guild_id, token_encrypted, token_hash, token_last4,"
    " discord_user_id, max_jobs, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(channel_id) DO UPDATE SET"
    " token_encrypted = excluded.token_encrypted, token_hash = excluded.token_hash,"
    " token_last4 = excluded.token_last4, discord_user_id = excluded.discord_user_id,"
    " max_jobs = excluded.max_jobs, updated_at = excluded.updated_at,"
    " in_rotation = 1, error = NULL, error_details = NULL, consecutive_failures = 0"
    " WHERE accounts.guild_id = excluded.guild_id"
    f" RETURNING {_COLUMNS}"
)


def account_from_row(row: sqlite3.Row) -> AccountConfig:
    """An accounts row, selected as ``_COLUMNS``, as an AccountConfig."""
    values = list(row)
    values[_IN_ROTATION] = bool(values[_IN_ROTATION])
    return AccountConfig(*values)


class AccountRepository:
    def __init__(self, db: Database, cipher: TokenCipher) -> None:
        self._db = db
        self._cipher = cipher
        self._lists: dict[str, tuple[int, tuple[AccountConfig, ...]]] = {}  # guild -> (data version, list)

    async def _one(self, where: str, params: tuple) -> AccountConfig | None:
        row = await self._db.lookup_one(f"SELECT {_COLUMNS} FROM accounts WHERE {where}", params)
        return None if row is None else account_from_row(row)

    async def get(self, guild_id: str, channel_id: str) -> AccountConfig | None:
        return await self._one("guild_id = ? AND channel_id = ?", (guild_id, channel_id))

    async def list(self, guild_id: str) -> list[AccountConfig]:
        """The server's configurations, oldest first.

        Remembered per server together with the database's version: while no connection
        (of this process or another) has committed anything since, the same answer is
        given again without reading. Any commit at all makes the next call read.
        """
        version = self._db.data_version()
        cached = self._lists.get(guild_id)
        if cached is not None and version is not None and cached[0] == version:
            return list(cached[1])
        rows = await self._db.lookup_all(
            f"SELECT {_COLUMNS} FROM accounts WHERE guild_id = ? ORDER BY created_at, channel_id", (guild_id,)
        )
        configs = [account_from_row(row) for row in rows]
        if version is not None and LIST_CACHE_SERVERS:
            if len(self._lists) >= LIST_CACHE_SERVERS:
                self._lists.clear()
            # Read before the rows: a commit in between labels newer rows with an older
            # version, so the next call reads again; never the other way round.
            self._lists[guild_id] = (version, tuple(configs))
        return configs

    async def find_by_token(self, token: str) -> AccountConfig | None:
        """The configuration using this token anywhere in the bot (a keyed-hash lookup)."""
        return await self._one("token_hash = ?", (self._cipher.fingerprint(token),))

    async def find_by_user(self, discord_user_id: str) -> AccountConfig | None:
        return await self._one("discord_user_id = ?", (discord_user_id,))

    async def upsert(
        self, *, guild_id: str, channel_id: str, token: str, discord_user_id: str, max_jobs: int
    ) -> AccountConfig:
        """Creates or replaces the channel's configuration in one statement.

        Saving puts the account back in rotation. The unique indexes are the final word
        on duplicates: a concurrent save of the same token elsewhere fails here and
        nothing is written.
        """
        now = utcnow()
        try:
            row = await self._db.fetchone(
                UPSERT_SQL,
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
            )
        except IntegrityError:
            duplicate = await duplicate_of(self, token=token, discord_user_id=discord_user_id, channel_id=channel_id)
            if duplicate is not None:
                raise duplicate from None
            raise
        if row is None:
            # The WHERE of the upsert refused: the channel is another server's.
            raise ChannelOwnedElsewhere(channel_id)
        return account_from_row(row)

    async def delete(self, guild_id: str, channel_id: str) -> bool:
        return await self._db.execute(
            "DELETE FROM accounts WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        ) > 0

    async def set_rotation(
        self, guild_id: str, channel_id: str, *, in_rotation: bool, error: str | None = None,
        error_details: str | None = None,
    ) -> bool:
        """Takes an account out of rotation with the reason, or puts it back (clearing it). Taking
        out changes only an account in rotation, in one statement: True for the one call that
        took it out (its first reason stays), False when it was out already or is gone."""
        return await self._db.execute(
            "UPDATE accounts SET in_rotation = ?, error = ?, error_details = ?, consecutive_failures = 0,"
            " updated_at = ? WHERE guild_id = ? AND channel_id = ?" + ("" if in_rotation else " AND in_rotation = 1"),
            (int(in_rotation), error, error_details, utcnow(), guild_id, channel_id),
        ) > 0

    async def record_failure(self, channel_id: str) -> int:
        """Counts a job of the account that failed; returns how many failed in a row."""
        row = await self._db.fetchone(
            "UPDATE accounts SET consecutive_failures = consecutive_failures + 1 WHERE channel_id = ?"
            " RETURNING consecutive_failures",
            (channel_id,),
        )
        return 0 if row is None else int(row[0])

    async def record_success(self, channel_id: str) -> None:
        await self._db.execute(
            "UPDATE accounts SET consecutive_failures = 0 WHERE channel_id = ? AND consecutive_failures > 0",
            (channel_id,),
        )

    async def in_rotation_count(self, guild_id: str) -> int:
        row = await self._db.lookup_one(
            "SELECT COUNT(*) FROM accounts WHERE guild_id = ? AND in_rotation = 1", (guild_id,)
        )
        return int(row[0])

    async def rotation_counts(self) -> tuple[int, int]:
        row = await self._db.fetchone(
            "SELECT COALESCE(SUM(in_rotation = 1), 0), COALESCE(SUM(in_rotation = 0), 0) FROM accounts"
        )
        return int(row[0]), int(row[1])

    async def channel_ids(self) -> set[str]:
        # Every row: through the worker thread, not a lookup on the loop's (thousands of rows).
        return {row[0] for row in await self._db.fetchall("SELECT channel_id FROM accounts")}

    async def decrypt_token(self, guild_id: str, channel_id: str) -> str | None:
        """The clear token, for the code that acts with it; never for display."""
        row = await self._db.lookup_one(
            "SELECT token_encrypted FROM accounts WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        )
        return None if row is None else self._cipher.decrypt(row[0])
