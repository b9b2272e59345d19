"""SQLite access: one aiosqlite connection, WAL, and numbered migrations.

Migrations are the files ``migrations/NNNN_name.sql``. Each one that the database has not
seen is applied inside one transaction together with the row that records it, so a crash
mid-migration leaves the previous version intact, never half of the new one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import StartupError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    if not directory.is_dir() or not any(directory.glob("*.sql")):
        # Run from a checkout (or the Docker image): an installed copy without the
        # migrations folder must fail here, not start on an empty database.
        raise StartupError(f"no migrations found in {directory}; run the bot from the project's checkout")
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a version in {directory}")
    return migrations


async def connect(path: Path | str) -> aiosqlite.Connection:
    """Opens the database with the settings every connection of the bot uses."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; the code says BEGIN where it means it.
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    # Several bot processes may share one file: wait for a lock instead of failing.
    await conn.execute("PRAGMA busy_timeout=5000")
    await conn.execute("PRAGMA synchronous=NORMAL")
    return conn


async def migrate(conn: aiosqlite.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Applies the migrations the database lacks, in order; returns the versions applied."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    applied = []
    for migration in migrations:
        # BEGIN IMMEDIATE takes the write lock first, so two processes starting together
        # cannot both decide a migration is missing and apply it twice.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ) as cur:
                if await cur.fetchone():
                    await conn.execute("ROLLBACK")
                    continue
            for statement in _statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("Applied migration %s", migration.name)
        applied.append(migration.version)
    return applied


def _statements(sql: str) -> list[str]:
    # executescript() would COMMIT the surrounding transaction; split on complete
    # statements instead so a migration stays inside the transaction above.
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        raise ValueError("migration ends with an incomplete statement")
    return statements


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
        row = await cur.fetchone()
    return int(row[0])


async def get_meta(conn: aiosqlite.Connection, key: str) -> str | None:
    async with conn.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
        row = await cur.fetchone()
    return None if row is None else row[0]


async def set_meta(conn: aiosqlite.Connection, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


async def close(conn: aiosqlite.Connection) -> None:
    """Checkpoints the WAL into the main file and closes, leaving no -wal file behind."""
    try:
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await conn.close()


class Database:
    """The bot's connection, with transaction boundaries that coroutines cannot cross.

    aiosqlite gives one connection to many coroutines. Without a lock, a statement from
    one coroutine issued while another holds ``BEGIN`` would join (and roll back with)
    the other's transaction. Every statement therefore runs under ``lock``, and a
    transaction (:meth:`run`) holds it from ``BEGIN IMMEDIATE`` to ``COMMIT``. Other processes sharing
    the file are kept apart by SQLite's own write lock (``BEGIN IMMEDIATE`` + busy timeout).
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        if not callable(getattr(conn, "_execute", None)):
            raise RuntimeError("this aiosqlite version lacks Connection._execute; see pyproject for the supported range")
        self.conn = conn
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, migrations: list[Migration] | None = None) -> Database:
        conn = await connect(path)
        try:
            await migrate(conn, migrations)
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def close(self) -> None:
        async with self.lock:
            await close(self.conn)

    # Each call is one hop to aiosqlite's thread (statement, rows and cursor together),
    # instead of aiosqlite's three (execute, fetch, close): the hops are most of the cost.

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        params = tuple(params)
        async with self.lock:
            # fetchall, then the first: the statement runs to its end (an UPDATE … RETURNING
            # must not stay half-stepped and keep its implicit transaction open).
            rows = await self.conn._execute(lambda: self.conn._conn.execute(sql, params).fetchall())
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        params = tuple(params)
        async with self.lock:
            return await self.conn._execute(lambda: self.conn._conn.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement in its own implicit transaction; returns the rows changed."""
        params = tuple(params)
        async with self.lock:
            return await self.conn._execute(lambda: self.conn._conn.execute(sql, params).rowcount)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``work`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` in the connection's thread.

        The whole transaction is one hop to aiosqlite's worker thread instead of one per
        statement: placement and release are the hot path, and this is what keeps them
        near the raw speed of a single UPDATE. ``work`` is plain sqlite3 code; any
        exception rolls everything back. If the caller is cancelled meanwhile, the thread
        still finishes the transaction, commit or rollback, before any other statement.
        """
        async with self.lock:
            # aiosqlite has no public "run this in your thread"; _execute is what all of
            # its own methods use (checked at open()).
            return await self.conn._execute(_in_transaction, self.conn._conn, work)

    async def get_meta(self, key: str) -> str | None:
        async with self.lock:
            return await get_meta(self.conn, key)

    async def set_meta(self, key: str, value: str) -> None:
        async with self.lock:
            await set_meta(self.conn, key, value)


def _in_transaction(raw: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    raw.execute("BEGIN IMMEDIATE")
    try:
        result = work(raw)
        raw.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed (disk full): a transaction left open would make
        # every later BEGIN fail.
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return result


IntegrityError = sqlite3.IntegrityError
