"""Which engine the settings choose, opened and migrated: SQLite by default, PostgreSQL with DATABASE_URL."""

from __future__ import annotations

from bot.settings import Settings
from bot.store import Database


async def open_database(settings: Settings) -> Database:
    if settings.database_url is None:
        from bot.store.sqlite.database import Database as SQLiteDatabase

        return await SQLiteDatabase.open(settings.database_path)
    from bot.store.postgres.database import Database as PostgresDatabase

    return await PostgresDatabase.open(settings.database_url.get_secret_value(), pool_size=settings.database_pool_size)
