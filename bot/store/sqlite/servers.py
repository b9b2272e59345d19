"""Each server's settings (``/pixverse-settings``) on SQLite."""

from __future__ import annotations

import time

from bot.store import KEEP, ServerSettings, settings_changes
from bot.store.sqlite.database import Database


class ServerSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: str) -> ServerSettings:
        row = await self._db.lookup_one(
            "SELECT buttons, alerts_channel_id FROM server_settings WHERE guild_id = ?", (guild_id,))
        return ServerSettings() if row is None else ServerSettings(**dict(row))

    async def set(self, guild_id: str, *, buttons: str | None = None,
                  alerts_channel_id: str | None = KEEP) -> ServerSettings:
        values = settings_changes(buttons=buttons, alerts_channel_id=alerts_channel_id)
        columns = ["guild_id", *values, "updated_at"]
        await self._db.execute(
            f"INSERT INTO server_settings ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            " ON CONFLICT(guild_id) DO UPDATE SET "
            + ", ".join(f"{column} = excluded.{column}" for column in columns[1:]),
            (guild_id, *values.values(), time.time()),
        )
        return await self.get(guild_id)
