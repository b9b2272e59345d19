"""Fresh databases of each engine for the tests that run on both (the store contract suite, the
dispatcher tests). An engine joins the tests by adding an entry to ``ENGINES``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.store import Database

Opener = Callable[[], Awaitable[Database]]


@contextlib.asynccontextmanager
async def sqlite_opener(tmp_path) -> AsyncIterator[Opener]:
    from bot.store.sqlite.database import Database as SQLiteDatabase

    path = tmp_path / "test.db"
    yield lambda: SQLiteDatabase.open(path)


@contextlib.asynccontextmanager
async def postgres_opener(tmp_path) -> AsyncIterator[Opener]:
    from bot.store.postgres.database import Database as PostgresDatabase
    from tests.postgres_support import fresh_schema

    async with fresh_schema() as (url, schema):
        yield lambda: PostgresDatabase.open(url, pool_size=4, server_settings={"search_path": schema})


# Engine -> an opener of one fresh, empty database: each call opens a connection (a process's
# view) to that same database, migrated.
ENGINES = {"sqlite": sqlite_opener, "postgres": postgres_opener}
