"""SQLite access: one aiosqlite connection, WAL, and numbered migrations.

Migrations are the files ``migrations/sqlite/NNNN_name.sql``, shipped in the package as
``bot.migrations``. Each one that the database has not
seen is applied inside one transaction together with the row that records it, so a crash
mid-migration leaves the previous version intact, never half of the new one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.accounts.crypto import TokenCipher
from bot.errors import StartupError, StoreBusy, StoreUnwritable
from bot.store import Stores
from bot.store.migrations import Migration, migrations_dir, tell_newer
from bot.store.migrations import load_migrations as _load_migrations

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS_DIR = migrations_dir("sqlite")


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return _load_migrations(directory)


def prepare_file(path: Path | str) -> None:
    """Creates the database file 0600 (its folder 0700 when the bot makes it) before SQLite does.

    The file holds prompts, replyUrl and replyRef in clear; SQLite gives the -wal and -shm
    files the database file's own mode, so all three stay private. Opening it for writing
    here also names the operating system's reason (read-only file system, permission
    denied) before SQLite would reduce it to "unable to open database file".
    """
    if str(path) == ":memory:":
        return
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


async def connect(path: Path | str) -> aiosqlite.Connection:
    """Opens the database with the settings every connection of the bot uses.

    On any failure the connection is closed before the error goes on: a half-opened
    aiosqlite connection keeps its worker thread, and with it the process, alive.
    """
    prepare_file(path)
    # isolation_level=None: no implicit transactions; the code says BEGIN where it means it.
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        # Several bot processes may share one file: wait for a lock instead of failing. First,
        # so that switching to WAL waits for a lock too.
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        # FULL: every commit is synced to the disk before the caller is answered, so a write
        # acknowledged 204/200 survives a power cut, not only a killed process (NORMAL in WAL
        # mode may roll back the last commits on power loss). Its cost: bench/ and the README.
        await conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        await conn.close()
        raise
    return conn


# What no restart changes until the operator acts: the file is not a database (or damaged), or the bot
# may not write it or its folder. Anything else (a lock, a full disk, an I/O error, a network mount
# away for a moment) may pass: exit code 1, and the restart policy tries again.
_LASTING_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR})
_LASTING_REASONS = ("not a database", "malformed", "encrypted", "readonly", "read-only")


def open_error(path: Path | str, exc: BaseException) -> StartupError:
    """A file that cannot be used: one line; lasting only for what a restart cannot change."""
    lasting = (isinstance(exc, OSError) and exc.errno in _LASTING_ERRNOS) or any(
        reason in str(exc).lower() for reason in _LASTING_REASONS)
    return StartupError(open_error_line(path, exc), lasting=lasting)


def open_error_line(path: Path | str, exc: BaseException) -> str:
    """One line for a database that cannot be opened: the file and the reason, no traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror[0].lower() + exc.strerror[1:]  # "Read-only file system" mid-sentence
    else:
        reason = str(exc) or type(exc).__name__
    hint = ""
    if "locked" in reason or "busy" in reason:
        hint = " (another process holds it; is another copy of the bot migrating or stuck?)"
    elif "readonly" in reason or "read-only" in reason or "permission" in reason:
        hint = " (the bot needs to write the file and its folder)"
    elif "not a database" in reason or "malformed" in reason:
        hint = " (restore it from a backup, or move it away to start afresh)"
    return f"Cannot open the database {path}: {reason}{hint}"


async def migrate(conn: aiosqlite.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Applies the migrations the database lacks, in order; returns the versions applied."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
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
    tell_newer([await schema_version(conn)], migrations)
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


async def close(conn: aiosqlite.Connection) -> None:
    """Checkpoints the WAL into the main file and closes, leaving no -wal file behind."""
    try:
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await conn.close()


# Writes that arrive while a batch runs wait for the next one; this many at most share a
# transaction. Each statement is one call to aiosqlite's thread, and a batch holds SQLite's
# write lock from BEGIN to COMMIT: a small cap keeps that short, while one sync of the disk
# still serves the whole batch.
MAX_BATCH = 32
# ... but only while this process writes alone. SQLite's busy handler polls for the lock, it
# does not queue for it, so a process that holds the lock across calls, batch after batch,
# can starve another one sharing the file for longer than the busy timeout (measured: two
# bot processes on a loaded machine, "database is locked"). While another bot process has
# renewed its lease lately, every write is its own statement or transaction, and the lock is
# held only while SQLite runs it. Looked up at most this often (a read on the loop's thread):
SHARED_CHECK_SECONDS = 1.0
# A lease renewed within this long counts (leases are renewed every 30 s at most).
OTHERS_RECENT_SECONDS = 120.0
# A lookup on the event loop's thread is stopped after this long and asked again on the
# worker thread: the loop (and so the gateway heartbeat) is never held longer.
LOOKUP_BUDGET_SECONDS = 0.002


class Tx:
    """The statements of one unit of work, each one call to aiosqlite's thread (its public API).

    A work given to :meth:`Database.run` receives one and must not BEGIN, COMMIT or ROLLBACK
    itself: the database does that around it.
    """

    __slots__ = ("_connection",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._connection = conn

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        # execute_fetchall runs the statement to its end and closes its cursor in the thread:
        # one call, and no UPDATE … RETURNING left half-stepped with its transaction open.
        return list(await self._connection.execute_fetchall(sql, _bound(params)))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement; returns the rows it changed (read through RETURNING, in the same call).

        Counted for statements that begin with INSERT, UPDATE, DELETE or REPLACE and end without a
        comment; any other (a ``WITH`` prefix, DDL, a PRAGMA) counts 0."""
        return len(await self.fetchall(_counting(sql), params))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        """The same statement for many rows in one call (bulk loads: benchmarks, fixtures)."""
        cursor = await self._connection.executemany(sql, rows)
        await cursor.close()


_DML = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)


Params = Iterable[Any] | Mapping[str, Any]


def _bound(params: Params) -> tuple[Any, ...] | dict[str, Any]:
    """Parameters as sqlite3 binds them: by position, or by name (``:name``) from a mapping."""
    return dict(params) if isinstance(params, Mapping) else tuple(params)


def _counting(sql: str) -> str:
    """A changing statement that reports each row it changed: its rowcount in the same call."""
    if _DML.match(sql) and not _RETURNING.search(sql):
        return sql.rstrip().rstrip(";") + " RETURNING 1"
    return sql


@dataclass(eq=False)
class _Work:
    """One caller's unit of work, waiting for its batch."""

    run: Callable[[Tx], Awaitable[Any]]
    future: asyncio.Future
    transaction: bool  # Database.run: several statements that commit together
    readonly: bool  # a SELECT: needs no savepoint and no write lock


class Database:
    """The bot's SQLite access: one aiosqlite connection that writes, one loop connection that looks up.

    Only aiosqlite's public API is used: every statement is one call to its thread
    (``execute_fetchall``), and a transaction is its statements between ``BEGIN IMMEDIATE``
    and ``COMMIT``, sent by the one task that owns the connection.

    **Writes (group commit).** Calls are queued, and everything queued while one batch runs
    goes together in the next one: one ``BEGIN IMMEDIATE`` … ``COMMIT`` (one sync of the
    disk), each :meth:`run` in its own ``SAVEPOINT``. A caller's exception rolls back its
    own work only; if the transaction as a whole fails (BEGIN or COMMIT, a full disk),
    every caller of the batch gets that error and nothing of the batch is kept. Results are
    handed out only after COMMIT, so no caller is told "saved" for something that was not.
    A batch of one runs exactly as a lone call would: a statement in autocommit, a
    :meth:`run` in its own transaction. Batches run in arrival order, one at a time, so a
    coroutine's calls keep their order and a :meth:`run` is never interleaved with another
    caller's statements. Other processes sharing the file are kept apart by SQLite's write
    lock (``BEGIN IMMEDIATE`` + busy timeout).

    **Lookups.** :meth:`lookup_one` and :meth:`lookup_all` answer small indexed reads (a
    token, a configuration, a server's list) on the event loop's own thread, through a
    second, query-only ``sqlite3`` connection: in WAL mode a reader never waits for a
    writer, and such a read takes microseconds, far less than a call to aiosqlite's thread.
    It is bounded all the same: a read that meets a lock, or runs longer than
    ``LOOKUP_BUDGET_SECONDS``, is interrupted and asked again through aiosqlite. A lookup
    sees everything committed before it started, including the caller's own awaited writes.
    """

    engine = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, *, reader: sqlite3.Connection | None = None,
                 path: Path | str = "?") -> None:
        self.conn = conn
        self.path = path
        self._reader = reader
        self._lookup_deadline = 0.0
        if reader is not None:
            reader.set_progress_handler(self._lookup_over_budget, 1000)
        self._queue: list[_Work] = []
        self._flusher: asyncio.Task | None = None
        self._closed = False
        # Set when a write failed because the file cannot take it (disk full, I/O error);
        # cleared by the next write that commits. /healthz reports it.
        self.write_problem: str | None = None
        self._shared = False
        self._shared_checked_at = float("-inf")

    @classmethod
    async def open(cls, path: Path | str, *, migrations: list[Migration] | None = None) -> Database:
        """Opens and migrates the database; a file that cannot be used is a StartupError naming it."""
        try:
            conn = await connect(path)
        except (sqlite3.Error, OSError) as exc:
            raise open_error(path, exc) from None
        try:
            await migrate(conn, migrations)
            reader = None if str(path) == ":memory:" else open_reader(path)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise open_error(path, exc) from None
            raise
        return cls(conn, reader=reader, path=path)

    async def close(self) -> None:
        """Finishes the queued work, then checkpoints and closes both connections."""
        self._closed = True
        while (flusher := self._flusher) is not None:
            try:
                await asyncio.shield(flusher)
            except asyncio.CancelledError:
                # The batch task was cancelled (the loop shutting down cancels every task):
                # its callers are cancelled with it, and the connections must still be
                # closed. Only a cancellation of close() itself goes on up.
                if asyncio.current_task().cancelling() or not flusher.cancelled():
                    raise
                self._flusher_done(flusher)  # its callback may not have run yet
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await close(self.conn)

    # --- through aiosqlite's thread: every write, and reads that may be long ---------------

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        # fetchall, then the first: the statement runs to its end (an UPDATE … RETURNING
        # must not stay half-stepped and keep its implicit transaction open).
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        params = _bound(params)
        return await self._submit(lambda tx: tx.fetchall(sql, params), readonly=_is_select(sql))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement (in its own transaction when alone); returns the rows changed."""
        params = _bound(params)
        return await self._submit(lambda tx: tx.execute(sql, params))

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Runs ``work`` inside a transaction: all of it or none of it.

        ``work`` is a coroutine function given a :class:`Tx`; it must not BEGIN, COMMIT or
        ROLLBACK itself, and any exception it raises rolls its statements back. No other
        caller's statement runs between its statements. If the caller is cancelled once the
        batch has started, the work still finishes, committed or rolled back, before
        anything else runs; cancelled before that, it does not run at all.
        """
        return await self._submit(work, transaction=True)

    async def get_meta(self, key: str) -> str | None:
        row = await self.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def delete_meta(self, key: str) -> None:
        await self.execute("DELETE FROM meta WHERE key = ?", (key,))

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0])

    async def any_token_ciphertext(self) -> bytes | None:
        row = await self.fetchone("SELECT token_encrypted FROM accounts LIMIT 1")
        return None if row is None else row[0]

    async def listen(self, topic: str, callback) -> bool:
        return False  # processes sharing the file learn of changes by polling

    async def announce(self, topic: str, payload: str) -> bool:
        return False  # one process follows every server: nothing to tell another

    @property
    def name(self) -> str:
        return str(self.path)

    def stores(self, cipher: TokenCipher) -> Stores:
        from bot.store.sqlite.accounts import AccountRepository
        from bot.store.sqlite.jobs import JobRepository
        from bot.store.sqlite.servers import ServerSettingsRepository
        from bot.store.sqlite.tokens import ApiTokenRepository

        return Stores(AccountRepository(self, cipher), JobRepository(self), ApiTokenRepository(self),
                      ServerSettingsRepository(self))

    def _submit(self, run: Callable[[Tx], Awaitable[Any]], *, transaction: bool = False,
                readonly: bool = False) -> asyncio.Future:
        if self._closed:
            raise RuntimeError("the database is closed")
        loop = asyncio.get_running_loop()
        work = _Work(run, loop.create_future(), transaction, readonly)
        self._queue.append(work)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="database batches")
            self._flusher.add_done_callback(self._flusher_done)
        return work.future

    def _note_write(self, batch: list[_Work], outcomes: list[tuple[bool, Any]]) -> None:
        """Keeps :attr:`write_problem` true to what the last writes met."""
        for work, (ok, value) in zip(batch, outcomes):
            if work.readonly:
                continue
            if ok:
                if self.write_problem is not None:
                    log.warning("The database %s takes writes again", self.path)
                self.write_problem = None
            elif is_write_failure(value):
                if self.write_problem is None:
                    log.error("The database %s cannot be written: %s", self.path, value)
                self.write_problem = str(value)

    async def ping(self) -> None:
        """A trivial read through the worker thread: raises when the database does not answer."""
        await self.fetchone("SELECT 1")

    async def clock(self) -> float:
        # Every process on one SQLite file runs on the machine that holds it: one clock already.
        return time.time()

    async def probe_write(self) -> bool:
        """A tiny committed write, to learn whether the file takes writes again (for /healthz)."""
        try:
            await self.set_meta("write_probe", repr(time.time()))
        except (sqlite3.Error, StoreUnwritable, StoreBusy):
            return False
        return True

    def _flusher_done(self, flusher: asyncio.Task) -> None:
        """For a batch task cancelled before its first step: _flush's own cleanup never ran."""
        if self._flusher is not flusher:
            return  # _flush ended and cleaned up itself (a newer task may be running)
        self._flusher = None
        # The loop is going away: nobody may wait forever for an answer.
        for work in self._queue:
            work.future.cancel()
        self._queue.clear()

    async def _flush(self) -> None:
        try:
            while self._queue:
                # Callers cancelled while queued are dropped: their work never starts.
                limit = self._batch_limit()
                batch = [work for work in self._queue[:limit] if not work.future.done()]
                del self._queue[:limit]
                if not batch:
                    continue
                try:
                    outcomes = await _run_batch(self.conn, batch)
                except asyncio.CancelledError:
                    # The loop is going away: nobody may wait forever for an answer.
                    for work in batch + self._queue:
                        work.future.cancel()
                    self._queue.clear()
                    raise
                except BaseException as exc:  # the batch's transaction failed: all of it
                    self._note_write(batch, [(False, exc)] * len(batch))
                    for work in batch:
                        if not work.future.done():
                            work.future.set_exception(domain_error(exc))
                    continue
                self._note_write(batch, outcomes)
                for work, (ok, value) in zip(batch, outcomes):
                    if work.future.done():
                        continue  # its caller was cancelled meanwhile; the work ran all the same
                    if ok:
                        work.future.set_result(value)
                    else:
                        work.future.set_exception(domain_error(value))
        finally:
            self._flusher = None

    def _batch_limit(self) -> int:
        now = time.monotonic()
        if now - self._shared_checked_at >= SHARED_CHECK_SECONDS:
            self._shared_checked_at = now
            shared = self._others_write_here()
            if shared != self._shared:
                log.info("%s: %s", self.path, "another bot process writes to this file; each write goes alone"
                         if shared else "this process writes alone; writes are batched again")
            self._shared = shared
        return 1 if self._shared else MAX_BATCH

    def _others_write_here(self) -> bool:
        """Whether more than one bot process (this one included) renewed a lease lately."""
        if self._reader is None or self._closed:
            return False
        try:
            row = self._reader.execute(
                "SELECT COUNT(*) FROM processes WHERE heartbeat_at >= ?", (time.time() - OTHERS_RECENT_SECONDS,)
            ).fetchone()
        except sqlite3.Error:
            return self._shared  # locked for a moment: keep what was last seen
        return row[0] > 1

    # --- event loop thread: small indexed reads ------------------------------------------

    async def lookup_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.lookup_all(sql, params)
        return rows[0] if rows else None

    async def lookup_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """A SELECT of a few rows by an index, answered without leaving the event loop when it can."""
        if not _is_select(sql):
            raise ValueError("lookups are SELECT statements; writes go through execute() or run()")
        params = _bound(params)
        if self._reader is not None and not self._closed:
            self._lookup_deadline = time.perf_counter() + LOOKUP_BUDGET_SECONDS
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                # "interrupted" (over budget) or "database is locked" (a WAL recovery
                # elsewhere): the worker thread may take its time; anything else is real,
                # and leaves in the port's terms (a disk I/O error is StoreUnwritable: a 503).
                if not _is_busy_or_interrupted(exc):
                    translated = domain_error(exc)
                    if translated is exc:
                        raise
                    raise translated from exc
            finally:
                self._lookup_deadline = 0.0
        return await self.fetchall(sql, params)

    def data_version(self) -> int | None:
        """A number that changes whenever anything is committed to the file, by any connection.

        SQLite's ``PRAGMA data_version`` on the loop's query-only connection, which never
        writes itself: every commit is someone else's. None without that connection.
        """
        if self._reader is None or self._closed:
            return None
        return self._reader.execute("PRAGMA data_version").fetchone()[0]

    def _lookup_over_budget(self) -> int:
        # SQLite calls this every 1000 virtual-machine steps of the reader; non-zero stops it.
        return 1 if self._lookup_deadline and time.perf_counter() > self._lookup_deadline else 0


def open_reader(path: Path | str) -> sqlite3.Connection:
    """The query-only connection that :meth:`Database.lookup_all` uses on the loop's thread."""
    reader = sqlite3.connect(str(path), isolation_level=None)
    reader.row_factory = sqlite3.Row
    reader.execute("PRAGMA query_only=ON")
    # Never wait on the loop's thread: a lock sends the lookup to the worker instead.
    reader.execute("PRAGMA busy_timeout=0")
    return reader


def _failed_with(exc: BaseException, codes: frozenset[int], words: tuple[str, ...]) -> bool:
    """Whether ``exc`` is an SQLite error of one of these primary result codes (by its message
    when the error carries no code: one raised by hand, or by an older sqlite3 module)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in codes
    return any(word in str(exc) for word in words)


# "The file cannot take this write": a full disk (or max_page_count), an I/O error, a file
# that became read-only under the bot.
_WRITE_FAILURES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY})
_WRITE_FAILURE_WORDS = ("disk is full", "disk I/O error", "readonly database")
# Another connection holds the lock (past the busy timeout on the worker, at once on the reader).
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_BUSY_WORDS = ("locked", "busy")
# A lookup stopped by its time budget.
_INTERRUPTED = frozenset({sqlite3.SQLITE_INTERRUPT})


def is_write_failure(exc: BaseException) -> bool:
    return _failed_with(exc, _WRITE_FAILURES, _WRITE_FAILURE_WORDS)


def domain_error(exc: BaseException) -> BaseException:
    """SQLite's infrastructure failures as the store port's errors (the services know no SQLite);
    every other exception (a constraint, a bug) goes on as it is."""
    if is_write_failure(exc):
        translated: BaseException = StoreUnwritable(str(exc))
    elif isinstance(exc, sqlite3.OperationalError) and _failed_with(exc, _BUSY, _BUSY_WORDS):
        translated = StoreBusy(str(exc))
    else:
        return exc
    translated.__cause__ = exc
    return translated


def _is_select(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _is_busy_or_interrupted(exc: sqlite3.OperationalError) -> bool:
    return _failed_with(exc, _BUSY, _BUSY_WORDS) or _failed_with(exc, _INTERRUPTED, ("interrupted",))


async def _run_batch(conn: aiosqlite.Connection, batch: list[_Work]) -> list[tuple[bool, Any]]:
    """Runs a batch; each work's outcome as (ok, result or exception)."""
    tx = Tx(conn)
    if len(batch) == 1:
        work = batch[0]
        try:
            return [(True, await (_in_transaction(conn, work.run) if work.transaction else work.run(tx)))]
        except Exception as exc:
            return [(False, exc)]
    if all(work.readonly for work in batch):
        # Reads only: no transaction, so no write lock taken from other processes.
        outcomes = []
        for work in batch:
            try:
                outcomes.append((True, await work.run(tx)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    async def each(tx: Tx) -> list[tuple[bool, Any]]:
        return [await _in_savepoint(conn, tx, work) for work in batch]

    return await _in_transaction(conn, each)


async def _in_savepoint(conn: aiosqlite.Connection, tx: Tx, work: _Work) -> tuple[bool, Any]:
    if not work.transaction:
        # One statement needs no savepoint: SQLite undoes a failing statement by itself and
        # keeps the transaction (its default ABORT conflict resolution).
        try:
            return True, await work.run(tx)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled back the whole transaction (a full disk, an I/O error)
            return False, exc
    await tx.execute("SAVEPOINT work")
    try:
        result = await work.run(tx)
    except Exception as exc:
        if not conn.in_transaction:
            # SQLite rolled back the whole transaction itself (a full disk, an I/O error):
            # the batch's earlier work is gone too, so the batch fails as a whole.
            raise
        await tx.execute("ROLLBACK TO work")
        await tx.execute("RELEASE work")
        return False, exc
    await tx.execute("RELEASE work")
    return True, result


async def _in_transaction(conn: aiosqlite.Connection, work: Callable[[Tx], Awaitable[T]]) -> T:
    tx = Tx(conn)
    # IMMEDIATE: the write lock is taken at BEGIN, before the first read, so everything a
    # work reads stays true until its COMMIT, across every process sharing the file. This
    # is what makes a placement's capacity count safe (see placement.py).
    try:
        await tx.execute("BEGIN IMMEDIATE")
        result = await work(tx)
        await tx.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed (disk full), and when the batch task is cancelled
        # between two statements (the loop shutting down): a transaction left open would
        # make every later BEGIN fail, and would keep half of a work. Asked for whether or not
        # one looks open: a cancelled call's statement (BEGIN, say) still runs in aiosqlite's
        # thread, and this ROLLBACK, queued after it, runs after it.
        try:
            await tx.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open (BEGIN failed, or a queued COMMIT ended it)
        raise
    return result


IntegrityError = sqlite3.IntegrityError
