"""PostgreSQL as several bot processes share it: migrations raced, a lost connection, revocations and
jobs announced to the other processes at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time

import aiohttp
import asyncpg
import pytest
from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from bot.core import Core
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import API_REQUESTER, JobStatus, Verb
from bot.errors import DATABASE_UNREACHABLE, StoreUnavailable, from_exception
from bot.settings import Settings
from bot.store import JOBS_TOPIC, TOKENS_REVOKED_TOPIC, NewJob
from bot.store.postgres.database import Database
from bot.store.migrations import Migration, load_migrations
from bot.store.postgres.database import MIGRATIONS_DIR
from tests.dispatch_support import ManualBackend, add_account
from tests.e2e.test_http_api import free_port
from tests.postgres_support import fresh_schema, url_with_schema
from tests.test_core import QuietDiscord

GUILD = "111111111111111111"


@contextlib.asynccontextmanager
async def schema_db(**kwargs):
    async with fresh_schema() as (url, schema):
        db = await Database.open(url, pool_size=kwargs.pop("pool_size", 4), server_settings={"search_path": schema},
                                 **kwargs)
        try:
            yield db, url, schema
        finally:
            await db.close()


async def test_processes_starting_together_apply_each_migration_once(caplog):
    caplog.set_level(logging.INFO, logger="bot.store.postgres.database")
    async with fresh_schema() as (url, schema):
        opened = await asyncio.gather(*(
            Database.open(url, pool_size=1, server_settings={"search_path": schema}) for _ in range(4)
        ))
        try:
            rows = await opened[0].fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            expected = [(m.version, m.name) for m in load_migrations(MIGRATIONS_DIR)]
            assert [(r["version"], r["name"]) for r in rows] == expected
            applied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Applied migration")]
            assert applied == [f"Applied migration {name}" for _, name in expected]  # once, by one process
            assert [await db.schema_version() for db in opened] == [expected[-1][0]] * 4
        finally:
            for db in opened:
                await db.close()


async def test_a_refused_login_is_lasting_and_an_unreachable_server_is_not():
    """Exit code 2 (no restart helps) for a database that does not exist or a refused login; 1 for a
    server that does not answer, which a restart may find back."""
    from bot.errors import StartupError
    from tests.postgres_support import postgres_url

    scheme, rest = postgres_url().split("://", 1)
    server = rest.rsplit("/", 1)[0]
    with pytest.raises(StartupError) as missing:
        await Database.open(f"{scheme}://{server}/no_such_database_here")
    assert missing.value.lasting and "no_such_database_here" in str(missing.value)
    with pytest.raises(StartupError) as away:
        await Database.open("postgresql://bot:s3cretpw@127.0.0.1:1/pixverse")
    assert not away.value.lasting


async def test_a_url_asyncpg_cannot_read_is_lasting_and_never_quoted():
    """The settings refuse such a URL; opened by any other way, asyncpg's refusal (which quotes
    the URL's text) is still exit 2, naming the database, quoting none of the URL."""
    from bot.errors import StartupError

    for url, shown in (("postgresql://bot:s3cretpw@127.0.0.1:1/pixverse?x9s3cret", "postgresql://bot@127.0.0.1:1/pixverse"),
                       ("postgresql://bot:s3cretpw@127.0.0.1:1,127.0.0.1:x9s3cret/pixverse", "postgresql://bot@127.0.0.1/pixverse")):
        with pytest.raises(StartupError) as bad:
            await Database.open(url)
        assert bad.value.lasting
        assert str(bad.value) == (f"Cannot open the database {shown}: asyncpg cannot read"
                                  " DATABASE_URL (ValueError); check its hosts, ports and ?name=value options")
    # An option asyncpg knows, with a value it refuses: its own text, and exit 2 as well.
    with pytest.raises(StartupError) as bad:
        await Database.open("postgresql://bot:s3cretpw@127.0.0.1:1/pixverse?sslmode=bogus")
    assert bad.value.lasting and str(bad.value) == (
        "Cannot open the database postgresql://bot@127.0.0.1:1/pixverse: `sslmode` parameter must be one of:"
        " disable, allow, prefer, require, verify-ca, verify-full")


class CuttableProxy:
    """A TCP proxy in front of PostgreSQL whose cut drops every connection and refuses new ones,
    as a database host that went away does."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.StreamWriter] = set()
        self.silenced: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        """The connections open now go silent, as through a NAT that forgot them: what is sent is
        lost, nothing is answered, nothing is closed. New connections work."""
        self.silenced.update(self.pipes)

    async def cut(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.pipes):
            writer.transport.abort()
        self.pipes.clear()

    async def _serve(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.pipes.update({writer, up_writer})

        async def pump(source, sink):
            try:
                while data := await source.read(65536):
                    if sink in self.silenced:
                        continue
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def through(url: str, proxy: CuttableProxy) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, _, hostpart = rest.rpartition("@")
    path = hostpart.split("/", 1)[1]
    return f"{scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{proxy.port}/{path}"


async def test_a_lost_connection_answers_503_nothing_half_written_and_the_process_reconnects(tmp_path):
    async with fresh_schema() as (url, schema):
        host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
        proxy = CuttableProxy(host, int(port))
        await proxy.open()
        key = Fernet.generate_key().decode()
        settings = Settings(_env_file=None, discord_token="x", token_encryption_key=key, pixverse_backend="simulated",
                            database_url=url_with_schema(through(url, proxy), schema), http_port=free_port(),
                            http_host="127.0.0.1")
        core = await Core.open(settings, QuietDiscord())
        try:
            token = await core.api_tokens.create(GUILD, "admin")
            api = f"http://127.0.0.1:{settings.http_port}/v1/pixverse/account"
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:
                # The database answers: the server has no account yet (useapi's 404).
                async with http.get(api, headers=headers) as response:
                    assert response.status == 404

                # A transaction cut half-way is rolled back by the server: nothing of it is kept.
                with pytest.raises(StoreUnavailable) as info:
                    async with core.db.transaction() as conn:
                        await conn.execute("INSERT INTO meta (key, value) VALUES ('half', 'written')")
                        await proxy.cut()
                        await conn.execute("INSERT INTO meta (key, value) VALUES ('other', 'half')")
                assert from_exception(info.value).to_dict() == {"error": DATABASE_UNREACHABLE, "code": 503}

                # While the database is away, requests answer 503 at once with a clear text.
                started = time.monotonic()
                async with http.get(api, headers=headers) as response:
                    assert response.status == 503
                    assert await response.json() == {"error": DATABASE_UNREACHABLE, "code": 503}
                assert time.monotonic() - started < 5

                await proxy.open()  # the same port: the database is back
                deadline = time.monotonic() + 15
                while True:
                    async with http.get(api, headers=headers) as response:
                        if response.status == 404:
                            break
                        assert response.status == 503
                    assert time.monotonic() < deadline, "the process did not reconnect"
                    await asyncio.sleep(0.1)
            assert await core.db.get_meta("half") is None and await core.db.get_meta("other") is None
        finally:
            await core.close()
            await proxy.cut()


async def test_a_read_only_server_makes_healthz_503_until_it_takes_writes_again(caplog):
    """A failover onto a standby refuses every write while reads still answer. Here the bot's role
    gets default_transaction_read_only and the pool connects again: /healthz says the database
    cannot be written (not only that it answers), and is 200 again once a write commits."""
    from bot.errors import StoreUnwritable
    from tests.postgres_support import postgres_url

    role = "readonly_" + secrets.token_hex(4)
    admin = await asyncpg.connect(postgres_url())
    await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    try:
        async with fresh_schema() as (url, schema):
            scheme, rest = url.split("://", 1)
            settings = Settings(_env_file=None, discord_token="x", token_encryption_key=Fernet.generate_key().decode(),
                                pixverse_backend="simulated", http_port=free_port(), http_host="127.0.0.1",
                                database_url=url_with_schema(f"{scheme}://{role}@{rest.rpartition('@')[2]}", schema))
            core = await Core.open(settings, QuietDiscord())
            try:
                async with aiohttp.ClientSession() as http:
                    async def healthz():
                        async with http.get(f"http://127.0.0.1:{settings.http_port}/healthz") as response:
                            return response.status, await response.json()

                    assert await healthz() == (200, {"status": "ok", "code": 200})
                    await admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
                    await core.db.pool.expire_connections()
                    with caplog.at_level(logging.ERROR, logger="bot.store.postgres.database"):
                        with pytest.raises(StoreUnwritable):
                            await core.api_tokens.create(GUILD, "admin")
                    assert "cannot be written: cannot execute INSERT in a read-only transaction" in caplog.text
                    assert await healthz() == (503, {"status": "unavailable", "code": 503, "error":
                                                     "the database cannot be written (read-only, disk full or I/O error)"})
                    await admin.execute(f"ALTER ROLE {role} RESET default_transaction_read_only")
                    await core.db.pool.expire_connections()
                    assert await healthz() == (200, {"status": "ok", "code": 200})
                    assert core.db.write_problem is None
            finally:
                await core.close()
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")  # its tables went with the schema
        await admin.close()


async def test_a_revocation_through_one_process_reaches_the_others_at_once():
    async with schema_db() as (first, url, schema):
        second = await Database.open(url, pool_size=2, server_settings={"search_path": schema})
        try:
            cipher = TokenCipher(Fernet.generate_key())
            one, other = first.stores(cipher).tokens, second.stores(cipher).tokens
            assert await second.listen(TOKENS_REVOKED_TOPIC, other.forget)
            token = await one.create(GUILD, "admin")
            assert await other.guild_of(token) == GUILD  # now remembered there for CACHE_SECONDS (5 s)
            await one.revoke_all(GUILD)
            started = time.monotonic()
            while await other.guild_of(token) is not None:
                assert time.monotonic() - started < 1.0, "the revocation did not reach the other process"
                await asyncio.sleep(0.01)
        finally:
            await second.close()


async def test_a_job_asked_through_another_process_is_taken_by_its_shards_process_at_once():
    """The process of the server's shard hears of the job by NOTIFY, long before its poll. GUILD is on
    shard 1 of 2: the process running shard 0 takes the request, the one running shard 1 runs it."""
    async with schema_db() as (first, url, schema):
        second = await Database.open(url, pool_size=2, server_settings={"search_path": schema})
        cipher = TokenCipher(Fernet.generate_key())
        elsewhere_backend, owner_backend = ManualBackend(), ManualBackend()
        elsewhere = Dispatcher(first.stores(cipher).jobs, first.stores(cipher).accounts, elsewhere_backend,
                               shards=(2, frozenset({0})), rng=random.Random(1))
        owning = Dispatcher(second.stores(cipher).jobs, second.stores(cipher).accounts, owner_backend,
                            shards=(2, frozenset({1})), pickup_interval=60, rng=random.Random(2))
        try:
            assert await second.listen(JOBS_TOPIC, owning.pickup)
            await owning.start()
            await add_account(first.stores(cipher).accounts, GUILD, "333333333333333333", max_jobs=2, user="7001")
            started = time.monotonic()
            placed = await elsewhere.submit(guild_id=GUILD, requester_id="api", request_channel_id="api",
                                            verb=Verb.CREATE, body={"prompt": "a fox", "style": "Anime"})
            assert placed.job.owner is None  # placed in the database for the process of its shard
            while not owner_backend.submitted:
                assert time.monotonic() - started < 1.0, "the owning process did not take the job"
                await asyncio.sleep(0.01)
            assert [job_id for job_id, _ in owner_backend.submitted] == [placed.job.job_id]
            assert elsewhere_backend.submitted == []
            assert (await owning.get(placed.job.job_id, GUILD)).owner == owning.owner
        finally:
            await owning.close()
            await elsewhere.close()
            await second.close()


async def test_dropping_a_lease_that_loses_a_deadlock_is_run_again():
    """A process dropping its lease (its jobs' owner set to NULL through the foreign key) while a
    transaction that holds one of those jobs claims another for that same lease (the foreign key
    check): PostgreSQL aborts one of the two; the lease's single statement is run again rather
    than failing the shutdown."""
    async with schema_db() as (db, url, schema):
        stores = db.stores(TokenCipher(Fernet.generate_key()))
        await add_account(stores.accounts, GUILD, "333333333333333333", max_jobs=2, user="7001")
        await stores.jobs.heartbeat("leaving", 1.0)
        await stores.jobs.heartbeat("other", 1.0)
        new = NewJob(GUILD, "1", "2", Verb.CREATE, {"prompt": "x"})
        mine = (await stores.jobs.place(new, now=1.0, owner="leaving", queue_size=0, rng=random.Random(1))).job
        theirs = (await stores.jobs.place(new, now=1.0, owner="other", queue_size=0, rng=random.Random(2))).job
        async with db.transaction() as conn:
            # A transaction holds the leaving process's job (its row lock) …
            await conn.execute("UPDATE jobs SET updated_at = 2.0 WHERE job_id = $1", mine.job_id)
            # … the process drops its lease: the DELETE holds the lease row and waits for that job …
            forget = asyncio.create_task(stores.jobs.forget_owner("leaving"))
            await asyncio.sleep(0.3)
            # … and the transaction now gives another job to that lease (a key share on its row).
            with contextlib.suppress(Exception):
                await conn.execute("UPDATE jobs SET owner = 'leaving' WHERE job_id = $1", theirs.job_id)
        await asyncio.wait_for(forget, timeout=20)
        assert await db.fetchval("SELECT COUNT(*) FROM processes WHERE owner = 'leaving'") == 0


async def test_a_statement_on_a_connection_cut_without_a_word_gives_up_and_the_next_one_works():
    """A NAT that forgot the pool's connection: no reset ever comes, and a statement on it waited until
    the kernel gave up (about 15 minutes). It now answers 503 after the statement limit, and the
    connection is dropped: the next call, once the backoff is over, gets a new one that answers."""
    import inspect

    import bot.store.postgres.database as postgres

    # Every pool has the limit unless its opener says otherwise (the copy tool); 1 s here.
    assert inspect.signature(Database.open).parameters["command_timeout"].default == postgres.STATEMENT_TIMEOUT_SECONDS
    async with fresh_schema() as (url, schema):
        host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
        proxy = CuttableProxy(host, int(port))
        await proxy.open()
        db = await Database.open(through(url, proxy), pool_size=1, server_settings={"search_path": schema},
                                 command_timeout=1.0)
        try:
            assert await db.fetchval("SELECT 41 + 1") == 42
            proxy.silence()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(db.fetchval("SELECT 1"), timeout=20)
            assert time.monotonic() - started < 5
            await until(lambda: db.pool.get_size() == 0 or db.pool.get_idle_size() == 1, timeout=10)
            await asyncio.sleep(postgres.BACKOFF_FIRST_SECONDS)
            assert await asyncio.wait_for(db.fetchval("SELECT 41 + 1"), timeout=10) == 42
        finally:
            await db.close()
            await proxy.cut()


async def test_migrations_and_the_copy_have_no_statement_limit():
    """A long migration (an index on a large table) or a large table's copy outlasts the pool's limit."""
    migrations = load_migrations(MIGRATIONS_DIR)
    slow = Migration(migrations[-1].version + 1, "slow", "SELECT pg_sleep(1.5);")
    async with fresh_schema() as (url, schema):
        db = await Database.open(url, pool_size=1, server_settings={"search_path": schema},
                                 migrations=migrations + [slow], command_timeout=0.5)
        try:
            assert await db.schema_version() == slow.version
            with pytest.raises(StoreUnavailable):
                await db.fetchval("SELECT pg_sleep(1.5)")
        finally:
            await db.close()
        db = await Database.open(url, pool_size=1, server_settings={"search_path": schema}, command_timeout=None)
        try:
            assert await db.fetchval("SELECT pg_sleep(1.5)::text") == ""
        finally:
            await db.close()


async def test_the_listening_connection_comes_back_and_says_it_may_have_missed_something():
    async with fresh_schema() as (url, schema):
        host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
        proxy = CuttableProxy(host, int(port))
        await proxy.open()
        db = await Database.open(through(url, proxy), pool_size=1, server_settings={"search_path": schema})
        direct = await Database.open(url, pool_size=1, server_settings={"search_path": schema})
        heard: list[str | None] = []
        try:
            assert await db.listen(JOBS_TOPIC, heard.append)
            await direct.execute("SELECT pg_notify('pixverse_jobs', 'one')")
            await until(lambda: heard == ["one"])
            await proxy.cut()
            await direct.execute("SELECT pg_notify('pixverse_jobs', 'lost')")  # nobody listens: missed
            await proxy.open()
            await until(lambda: heard == ["one", None], timeout=15)  # back, and told it may have missed some
            await direct.execute("SELECT pg_notify('pixverse_jobs', 'two')")
            await until(lambda: heard == ["one", None, "two"])
        finally:
            await db.close()
            await direct.close()
            await proxy.cut()
        assert not await db.listen(JOBS_TOPIC, heard.append)  # closed: nothing is opened again


async def until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_placement_reads_committed_data_whatever_the_database_default():
    """The guard needs READ COMMITTED: a database (or URL) asking for another default is overridden."""
    async with fresh_schema() as (url, schema):
        db = await Database.open(url + "?default_transaction_isolation=serializable", pool_size=1,
                                 server_settings={"search_path": schema})
        try:
            assert await db.fetchval("SHOW transaction_isolation") == "read committed"
            async with db.transaction() as conn:
                assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
        finally:
            await db.close()


async def test_a_process_frozen_inside_a_transaction_loses_it_and_its_servers_lock(monkeypatch):
    """A frozen or cut-off process held its server's placement lock, and every sweep behind it,
    until TCP gave up (hours): the server now ends a session idle inside a transaction
    (``idle_in_transaction_session_timeout``, a minute; a second here)."""
    from bot.store.postgres import database as pg
    from bot.store.postgres.jobs import LOCK_SERVER

    assert pg.SESSION_SETTINGS["idle_in_transaction_session_timeout"] == "60s"  # what a deployment gets
    monkeypatch.setitem(pg.SESSION_SETTINGS, "idle_in_transaction_session_timeout", "1s")
    async with schema_db(pool_size=2) as (db, _, _):
        assert await db.fetchval("SHOW tcp_keepalives_idle") == "60"
        frozen = await db.pool.acquire()
        transaction = frozen.transaction()
        await transaction.start()
        await frozen.execute(LOCK_SERVER, GUILD)
        await asyncio.sleep(1.5)  # frozen: nothing more on that connection
        async with db.transaction() as conn:  # another process's placement takes the lock at once
            await asyncio.wait_for(conn.execute(LOCK_SERVER, GUILD), timeout=5)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await frozen.execute("SELECT 1")  # its session is gone, and its transaction with it
        await db.pool.release(frozen)


async def test_a_release_waits_for_its_servers_lock():
    """A release takes the server's lock like every placement: one that frees a slot while a new job
    is being queued (which holds the lock) waits, then sees that job waiting and says so."""
    from bot.store.postgres.jobs import LOCK_SERVER

    async with schema_db() as (db, url, schema):
        stores = db.stores(TokenCipher(Fernet.generate_key()))
        await add_account(stores.accounts, GUILD, "333333333333333333", max_jobs=1, user="7001")
        await stores.jobs.heartbeat("p", 1.0)
        new = NewJob(GUILD, "1", "2", Verb.CREATE, {"prompt": "x"})
        running = (await stores.jobs.place(new, now=1.0, owner="p", queue_size=5, rng=random.Random(1))).job
        async with db.transaction() as conn:
            await conn.execute(LOCK_SERVER, GUILD)  # a placement of this server, mid-way
            release = asyncio.create_task(stores.jobs.release(running.job_id, JobStatus.COMPLETED, now=2.0))
            await asyncio.sleep(0.3)
            assert not release.done()  # it waits for the lock
            await conn.execute(
                "INSERT INTO jobs (job_id, guild_id, requester_id, request_channel_id, verb, params, status, state,"
                " created_at, updated_at) VALUES ('job:w', $1, '1', '2', 'create', '{}', 'created', 'waiting', 1, 1)",
                GUILD)
        released = await asyncio.wait_for(release, timeout=10)
        assert released.job is not None and released.others_waiting  # it saw the job queued meanwhile


@contextlib.asynccontextmanager
async def one_account_stores(max_jobs: int):
    """A migrated database with one account of GUILD, and its stores."""
    async with schema_db() as (db, _, _):
        stores = db.stores(TokenCipher(Fernet.generate_key()))
        await stores.accounts.upsert(guild_id=GUILD, channel_id="333333333333333333", token="token-of-a-xxxxxxxx",
                                     discord_user_id="733333333333333333", max_jobs=max_jobs)
        yield db, stores


async def ends_to_tell_after_an_earlier_and_a_current_end(new: NewJob, earlier_call_fields: str) -> tuple:
    """Two jobs like ``new``: one ended by an earlier version's pixverse_release call (its p_fields),
    one by today's store. Returns the ids of the ended jobs left to tell, and the two jobs."""
    async with one_account_stores(max_jobs=2) as (db, stores):
        old, current = [(await stores.jobs.place(new, now=1_800_000_000.0, owner=None, queue_size=0,
                                                 rng=random.Random(n))).job for n in range(2)]
        await db.fetchrow("SELECT * FROM pixverse_release($1, $2, $3, $4, $5::jsonb)",
                          old.job_id, None, "completed", 1_800_000_001.0, earlier_call_fields)
        await stores.jobs.release(current.job_id, JobStatus.COMPLETED, now=1_800_000_002.0)
        assert (await stores.jobs.get(old.job_id)).status == JobStatus.COMPLETED
        ended = await stores.jobs.final_not_shown(ended_before=1_800_000_100.0, ended_after=0)
        return [job.job_id for job in ended], old, current


REPLY_JOB = NewJob(GUILD, API_REQUESTER, API_REQUESTER, Verb.CREATE,
                   {"prompt": "a fox", "replyUrl": "https://example.com/hook"})


async def test_a_job_ended_by_a_process_of_the_earlier_version_leaves_no_end_to_show_twice():
    """While processes are upgraded one at a time, an older one ends jobs with pixverse_release's
    call as it was (naming no final_pending) and shows their ends itself: an upgraded process
    must not find them and tell the members again."""
    new = NewJob(GUILD, "900000000000000001", "900000000000000002", Verb.CREATE, {"prompt": "a fox"})
    ended, _, current = await ends_to_tell_after_an_earlier_and_a_current_end(new, "{}")  # 0003's call
    assert ended == [current.job_id]


async def test_an_http_api_job_ended_by_a_process_of_the_previous_version_is_not_posted_twice():
    """A process of the previous version POSTs an HTTP API job's final state to its replyUrl and
    records nothing (its pixverse_release call names final_pending alone): an upgraded process must
    not find that end and POST it again."""
    ended, _, current = await ends_to_tell_after_an_earlier_and_a_current_end(REPLY_JOB, '{"final_pending": true}')
    assert ended == [current.job_id]  # 0007's call above, today's here


async def test_an_http_api_job_whose_parameters_jsonb_cannot_hold_still_ends():
    """A prompt with a \\u0000, stored before such text was refused: the job ends (its slot is freed),
    only its end is not looked for again (pixverse_has_reply_url cannot read the replyUrl)."""
    async with one_account_stores(max_jobs=1) as (db, stores):
        job = (await stores.jobs.place(REPLY_JOB, now=1_800_000_000.0, owner=None, queue_size=0,
                                       rng=random.Random(1))).job
        await db.execute("UPDATE jobs SET params = $1 WHERE job_id = $2",
                         '{"prompt": "a\\u0000fox", "replyUrl": "https://example.com/hook"}', job.job_id)
        released = await stores.jobs.release(job.job_id, JobStatus.COMPLETED, now=1_800_000_001.0)
        assert released.job is not None and released.job.status == JobStatus.COMPLETED
        assert await stores.jobs.final_not_shown(ended_before=1_800_000_100.0, ended_after=0) == []
        again = await stores.jobs.place(REPLY_JOB, now=1_800_000_002.0, owner=None, queue_size=0,
                                        rng=random.Random(2))
        assert again.queue_position is None  # the slot it held is free
