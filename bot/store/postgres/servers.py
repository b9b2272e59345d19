"""Each server's settings (``/pixverse-settings``) on PostgreSQL."""

from __future__ import annotations

import time

from bot.store import ServerSettings
from bot.store.postgres.database import Database


class ServerSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: str) -> ServerSettings:
        buttons = await self._db.fetchval("SELECT buttons FROM server_settings WHERE guild_id = $1", guild_id)
        return ServerSettings() if buttons is None else ServerSettings(buttons=buttons)

    async def set(self, guild_id: str, *, buttons: str) -> ServerSettings:
        row = await self._db.fetchrow(
            "INSERT INTO server_settings (guild_id, buttons, updated_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (guild_id) DO UPDATE SET buttons = excluded.buttons, updated_at = excluded.updated_at"
            " RETURNING buttons",
            guild_id, buttons, time.time(),
        )
        return ServerSettings(buttons=row["buttons"])
