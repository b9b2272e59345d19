"""Each server's settings (``/pixverse-settings``) on SQLite."""

from __future__ import annotations

import time

from bot.store import ServerSettings
from bot.store.sqlite.database import Database


class ServerSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: str) -> ServerSettings:
        row = await self._db.lookup_one("SELECT buttons FROM server_settings WHERE guild_id = ?", (guild_id,))
        return ServerSettings() if row is None else ServerSettings(buttons=row["buttons"])

    async def set(self, guild_id: str, *, buttons: str) -> ServerSettings:
        await self._db.execute(
            "INSERT INTO server_settings (guild_id, buttons, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(guild_id) DO UPDATE SET buttons = excluded.buttons, updated_at = excluded.updated_at",
            (guild_id, buttons, time.time()),
        )
        return await self.get(guild_id)
