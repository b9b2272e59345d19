"""PostgreSQL access through asyncpg: a connection pool, migrations under an advisory lock, and
the driver's failures in the port's terms.

Every call takes a connection from the pool for one statement or one transaction. A failure
of the server or of the network (connection refused, lost, the server shutting down) becomes
:class:`StoreUnavailable` (a 503 with a clear text), and for a short, growing while
(``BACKOFF_*``) the next calls get it at once instead of each waiting on a dead server; then
one call tries again, and the pool opens new connections. The server rolls back a
transaction whose connection was lost, so nothing is half-written.

The URL's password never leaves this module: the database is named by :func:`describe_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from bot.accounts.crypto import TokenCipher
from bot.errors import StartupError, StoreBusy, StoreUnavailable, StoreUnwritable
from bot.logs import register_secrets
from bot.store import Stores
from bot.store.migrations import Migration, load_migrations, migrations_dir, tell_newer

log = logging.getLogger(__name__)

MIGRATIONS_DIR = migrations_dir("postgres")
# Every connection of the bot's, whatever the caller, the URL or the database's default asks.
FORCED_SETTINGS = {"default_transaction_isolation": "read committed"}
# Every connection's too, unless its caller asks otherwise (the copy tool has no idle limit).
SESSION_SETTINGS = {
    # A process frozen or cut off inside a transaction (a paused VM, a network partition) would
    # hold its server's placement lock, and every process's sweep behind it, until the server's
    # TCP keepalive gave up (about 2 h by default). No transaction of the bot idles for long: the
    # server ends such a session after a minute, and notices a silent peer within about two.
    "idle_in_transaction_session_timeout": "60s",
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
}
# A single statement that lost a deadlock (or a serialization failure) is run again this often.
STATEMENT_RETRIES = 3
# pg_advisory_lock's two-key form (its key space is apart from the one-key form that placement
# uses per server): held while a process applies migrations.
MIGRATION_LOCK = (0x50495856, 1)  # "PIXV", 1
# A call waits this long for a free connection of the pool before it answers 503.
ACQUIRE_TIMEOUT_SECONDS = 10.0
# A statement of the pool's gives up after this long (asyncpg's command_timeout) and its connection
# is dropped: one on a connection cut without a word (a NAT that forgot it, a host gone) would
# otherwise wait until the kernel gives up, about 15 minutes. Every statement of the bot's takes
# milliseconds; migrations (their own connection) and the copy tool have no limit.
STATEMENT_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
# After the server could not be reached, calls fail at once for this long, doubled at each
# failed retry up to the maximum; the first success ends it.
BACKOFF_FIRST_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 8.0
# The listening connection is asked a trivial query this often, so that one silently cut (no
# reset ever arrives) is found and replaced.
LISTEN_KEEPALIVE_SECONDS = 30.0


def channel_of(topic: str) -> str:
    """The NOTIFY channel of a topic of the port (bot.store.JOBS_TOPIC, …)."""
    return "pixverse_" + topic


def describe_url(url: str) -> str:
    """The database's URL as it may be shown: scheme, user, host, port and name; never the password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "localhost"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number (a host list): shown without it, the name still says which
        port = ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def url_passwords(url: str) -> tuple[str, ...]:
    """The password the URL gives, registered with the log redactor when the database opens: in its
    user part (as written, and percent-decoded as asyncpg reads it) or as its ``password`` query
    parameter, which asyncpg takes too."""
    parts = urlsplit(url)
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    found += parse_qs(parts.query).get("password", [])
    return tuple(dict.fromkeys(p for p in found if p))


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, (
        OSError,  # refused, reset, unreachable
        asyncio.TimeoutError,  # connecting, or waiting for a connection of the pool
        asyncpg.PostgresConnectionError,  # class 08: the connection is gone
        asyncpg.exceptions.OperatorInterventionError,  # class 57: the server is shutting down or starting
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
    )) or (isinstance(exc, asyncpg.InterfaceError) and ("closed" in str(exc) or "closing" in str(exc)))


def _lasting(exc: BaseException) -> bool:
    """A refusal no restart can change: the login (password, user, database name, host not allowed),
    or an option of the URL asyncpg refuses (``sslmode=bogus``)."""
    return isinstance(exc, (asyncpg.exceptions.InvalidAuthorizationSpecificationError,
                            asyncpg.exceptions.InvalidPasswordError,
                            asyncpg.exceptions.InvalidCatalogNameError,
                            asyncpg.exceptions.ClientConfigurationError))


def translate(exc: BaseException) -> BaseException | None:
    """The port's exception for a driver failure that has an honest answer; None for others."""
    if _unavailable(exc):
        return StoreUnavailable(type(exc).__name__)
    if isinstance(exc, (asyncpg.exceptions.DiskFullError, asyncpg.exceptions.ReadOnlySQLTransactionError)):
        return StoreUnwritable(type(exc).__name__)
    if isinstance(exc, (asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
                        asyncpg.exceptions.LockNotAvailableError,
                        asyncpg.exceptions.QueryCanceledError)):  # statement_timeout
        return StoreBusy(type(exc).__name__)
    return None


def changed(status: str) -> int:
    """The row count of a command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


class Database:
    """The pool and what the adapters ask of it; every method raises the port's errors."""

    engine = "postgresql"

    def __init__(self, pool: asyncpg.Pool, *, url: str, server_settings: dict[str, str] | None = None) -> None:
        self.pool = pool
        self.name = describe_url(url)
        # Why the last write was refused for good (a read-only server: a failover onto a standby,
        # default_transaction_read_only; a full disk); None once a write commits (probe_write).
        self.write_problem: str | None = None
        self._url = url
        self._server_settings = server_settings
        self._down_until = 0.0
        self._backoff = 0.0
        self._callbacks: dict[str, list[Callable[[str | None], None]]] = {}  # channel -> callbacks
        self._listening: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task | None = None
        self._listen_ready: asyncio.Future | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, migrations: list[Migration] | None = None,
                   server_settings: dict[str, str] | None = None,
                   command_timeout: float | None = STATEMENT_TIMEOUT_SECONDS) -> Database:
        """Connects, applies the migrations the database lacks, and returns the pool's owner.

        A server that cannot be reached or refuses the login is a StartupError naming the
        database (never its password)."""
        name = describe_url(url)
        # The password, whoever opens the database (the bot, the copy tool, a test), is never logged.
        register_secrets(*url_passwords(url), pinned=True)
        # Placement's guard relies on READ COMMITTED (each statement after the lock reads what was
        # committed before it): set here, whatever the server's or the database's default is.
        server_settings = {**SESSION_SETTINGS, **(server_settings or {}), **FORCED_SETTINGS}
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT_SECONDS,
                server_settings=server_settings, max_inactive_connection_lifetime=300,
                reset=_no_session_state, command_timeout=command_timeout,
            )
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StartupError(f"Cannot open the database {name}: {_reason(exc)}", lasting=_lasting(exc)) from None
        except ValueError as exc:
            # asyncpg could not read the URL (a host list with a port that is not a number, …): its
            # text quotes the URL's parts, so only its kind is shown. The URL must change: exit 2.
            raise StartupError(f"Cannot open the database {name}: asyncpg cannot read DATABASE_URL"
                               f" ({type(exc).__name__}); check its hosts, ports and ?name=value options",
                               lasting=True) from None
        try:
            # A connection of its own, without the pool's statement limit: a migration may be long.
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS, server_settings=server_settings)
            try:
                await migrate(conn, migrations)
            finally:
                await conn.close()
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                raise StartupError(f"Cannot migrate the database {name}: {_reason(exc)}",
                                   lasting=_lasting(exc)) from None
            raise
        return cls(pool, url=url, server_settings=server_settings)

    async def close(self) -> None:
        self._closed = True
        if self._listener_task is not None:
            self._listener_task.cancel()
            await asyncio.gather(self._listener_task, return_exceptions=True)
            self._listener_task = None
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except asyncio.TimeoutError:
            self.pool.terminate()

    # --- statements and transactions, in the port's errors ---------------------------------

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        if self._closed:
            raise StoreUnavailable("the database is closed (shutting down)")
        if self._down_until and time.monotonic() < self._down_until:
            raise StoreUnavailable("backing off")
        try:
            yield
        except Exception as exc:
            translated = translate(exc)
            if translated is None:
                raise
            if isinstance(translated, StoreUnavailable):
                self._note_down(exc)
            elif isinstance(translated, StoreUnwritable):
                if self.write_problem is None:
                    log.error("The database %s cannot be written: %s", self.name, _reason(exc))
                self.write_problem = str(translated)
            raise translated from None
        else:
            self._note_up()

    def _note_down(self, exc: BaseException) -> None:
        if not self._backoff:
            log.error("The database %s cannot be reached (%s); retrying with backoff", self.name, _reason(exc))
        self._backoff = min(BACKOFF_MAX_SECONDS, max(BACKOFF_FIRST_SECONDS, self._backoff * 2))
        self._down_until = time.monotonic() + self._backoff

    def _note_up(self) -> None:
        if self._backoff:
            log.warning("The database %s answers again", self.name)
        self._backoff = 0.0
        self._down_until = 0.0

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection of the pool, outside any transaction (each statement commits alone)."""
        async with self._guarded(), self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside one transaction: committed when the block ends, rolled back whole
        if it raises (a lost connection: by the server)."""
        async with self._guarded(), self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
            async with conn.transaction():
                yield conn

    async def _statement(self, method: str, sql: str, args: tuple) -> Any:
        """One statement in its own transaction. A deadlock or serialization failure rolled the
        statement back whole, so it is run again (a few times) before the caller hears of it:
        PostgreSQL picks a victim when, say, a process drops its lease (its jobs' owner set to
        NULL through the foreign key) while another claims one of those jobs."""
        for attempt in range(STATEMENT_RETRIES + 1):
            try:
                async with self.connection() as conn:
                    return await getattr(conn, method)(sql, *args)
            except StoreBusy as exc:
                if attempt == STATEMENT_RETRIES or not isinstance(exc.__context__, asyncpg.TransactionRollbackError):
                    raise
            await asyncio.sleep(0.01 * (attempt + 1))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._statement("fetch", sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._statement("fetchrow", sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._statement("fetchval", sql, args)

    async def execute(self, sql: str, *args: Any) -> int:
        """One statement in its own transaction; returns the rows it changed."""
        return changed(await self._statement("execute", sql, args))

    # --- the database as a whole ------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        return await self.fetchval("SELECT value FROM meta WHERE key = $1", key)

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key, value,
        )

    async def delete_meta(self, key: str) -> None:
        await self.execute("DELETE FROM meta WHERE key = $1", key)

    async def schema_version(self) -> int:
        return int(await self.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    async def any_token_ciphertext(self) -> bytes | None:
        return await self.fetchval("SELECT token_encrypted FROM accounts LIMIT 1")

    def stores(self, cipher: TokenCipher) -> Stores:
        from bot.store.postgres.accounts import AccountRepository
        from bot.store.postgres.jobs import JobRepository
        from bot.store.postgres.servers import ServerSettingsRepository
        from bot.store.postgres.tokens import ApiTokenRepository

        return Stores(AccountRepository(self, cipher), JobRepository(self), ApiTokenRepository(self),
                      ServerSettingsRepository(self))

    async def ping(self) -> None:
        """A trivial query on a connection of the pool; raises when the server does not answer.
        It is also the retry of a backoff: it always tries."""
        self._down_until = 0.0
        await self.fetchval("SELECT 1")

    async def probe_write(self) -> bool:
        """A tiny committed write, to learn whether the server takes writes again (for /healthz)."""
        try:
            await self.set_meta("write_probe", repr(time.time()))
        except (StoreUnwritable, StoreUnavailable, StoreBusy):
            return False
        if self.write_problem is not None:
            log.warning("The database %s takes writes again", self.name)
        self.write_problem = None
        return True

    async def clock(self) -> float:
        # The server's clock as the statement runs (not the transaction's start, as now() is).
        return float(await self.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))

    # --- LISTEN/NOTIFY ------------------------------------------------------------------------

    async def listen(self, topic: str, callback: Callable[[str | None], None]) -> bool:
        """Calls ``callback(payload)`` on each ``NOTIFY`` of the topic's channel (sent by any process
        when its transaction commits), and ``callback(None)`` whenever notifications may have been
        missed (the listening connection was lost, or could not be made at first, and is up again).

        One connection of its own, outside the pool, kept by a task that reconnects with backoff.
        Returns once that connection is up or its first attempt failed (it goes on trying)."""
        if self._closed:
            return False
        channel = channel_of(topic)
        self._callbacks.setdefault(channel, []).append(callback)
        if self._listener_task is None:
            self._listen_ready = asyncio.get_running_loop().create_future()
            self._listener_task = asyncio.create_task(self._keep_listening(), name="database listener")
        await asyncio.shield(self._listen_ready)
        if self._listening is not None and len(self._callbacks[channel]) == 1:
            with contextlib.suppress(Exception):  # lost meanwhile: the reconnection listens to every channel
                await self._listening.add_listener(channel, self._notified)
        return True

    async def announce(self, topic: str, payload: str) -> bool:
        if self._closed:
            return False
        await self._statement("execute", "SELECT pg_notify($1, $2)", (channel_of(topic), payload))
        return True

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._deliver(channel, payload)

    def _deliver(self, channel: str | None, payload: str | None) -> None:
        if self._closed:
            return
        for name, callbacks in self._callbacks.items():
            if channel is not None and name != channel:
                continue
            for callback in callbacks:
                try:
                    callback(payload)
                except Exception:
                    log.exception("A notification callback on %s failed", name)

    def _listening_settled(self) -> None:
        if self._listen_ready is not None and not self._listen_ready.done():
            self._listen_ready.set_result(None)

    async def _keep_listening(self) -> None:
        backoff, missed = BACKOFF_FIRST_SECONDS, False
        try:
            while True:
                try:
                    await self._listen_once(missed)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # whatever it was, notifications must come back
                    if not missed:
                        log.warning("Not listening for notifications on %s (%s); retrying", self.name, _reason(exc))
                    else:
                        backoff = min(BACKOFF_MAX_SECONDS, backoff * 2)
                else:
                    backoff = BACKOFF_FIRST_SECONDS
                    log.warning("Lost the notification connection to %s; reconnecting", self.name)
                missed = True
                self._listening_settled()
                await asyncio.sleep(backoff)
        finally:
            self._listening_settled()

    async def _listen_once(self, missed: bool) -> None:
        """One listening connection, from connecting to its loss (returns) or a failure (raises)."""
        conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_SECONDS, server_settings=self._server_settings)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel in list(self._callbacks):
                await conn.add_listener(channel, self._notified)
            self._listening = conn
            if missed:
                log.warning("Listening for notifications on %s again", self.name)
                self._deliver(None, None)  # anything may have happened meanwhile
            self._listening_settled()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), timeout=LISTEN_KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=CONNECT_TIMEOUT_SECONDS)
        finally:
            self._listening = None
            conn.terminate()


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset when a connection comes back: nothing to undo.

    asyncpg's default sends ``RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all() …`` on every
    release, one more round trip per call (measured: a trivial query 585 µs with it). The bot
    sets no session state on pooled connections: its advisory locks are transaction-scoped
    (the migration lock is released by ``migrate`` itself), LISTEN has its own connection, and
    asyncpg still rolls back a transaction left open before calling this."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Applies the migrations the database lacks, in order, each in one transaction with its
    record; returns the versions applied. Under a session advisory lock: processes starting
    together apply each migration exactly once (the others wait, then find it applied)."""
    migrations = load_migrations(MIGRATIONS_DIR) if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1, $2)", *MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM now()))"
        )
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)  # no arguments: the whole file, one round trip
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                   migration.version, migration.name)
            log.info("Applied migration %s", migration.name)
            applied.append(migration.version)
        tell_newer(done, migrations)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", *MIGRATION_LOCK)
