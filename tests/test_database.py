"""bot.store.sqlite.database.Database: group commit on the worker thread, lookups on the loop's thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from bot.errors import StoreUnwritable

from bot.store.sqlite import database as db


@pytest.fixture
async def database(tmp_path):
    opened = await db.Database.open(tmp_path / "test.db")
    await opened.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    yield opened
    await opened.close()


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """The size of every batch the worker thread ran."""
    sizes: list[int] = []
    run_batch = db._run_batch

    def recording(raw, batch):
        sizes.append(len(batch))
        return run_batch(raw, batch)

    monkeypatch.setattr(db, "_run_batch", recording)
    return sizes


async def names(database: db.Database) -> list[str]:
    return [row[0] for row in await database.fetchall("SELECT name FROM t ORDER BY id")]


async def hold_worker(database: db.Database) -> tuple[asyncio.Task, threading.Event]:
    """A transaction that keeps the database busy until the event is set."""
    release = threading.Event()
    started = asyncio.Event()

    async def wait(tx) -> None:
        started.set()
        await asyncio.to_thread(release.wait, 10)

    holder = asyncio.create_task(database.run(wait))
    await asyncio.wait_for(started.wait(), 10)
    return holder, release


async def queued_together(database: db.Database, *calls) -> list[asyncio.Task]:
    """Queues the calls while the worker is held, so they share its next batch; returns them, run."""
    holder, release = await hold_worker(database)
    tasks = [asyncio.create_task(call) for call in calls]
    await asyncio.sleep(0)  # all of them are queued behind the held transaction
    release.set()
    await holder
    await asyncio.wait(tasks)
    return tasks


async def test_concurrent_writes_share_a_batch_and_a_failing_one_undoes_only_itself(database, batch_sizes):
    tasks = await queued_together(database, *(
        database.execute("INSERT INTO t (name) VALUES (?)", ("same" if i in (3, 7) else f"n{i}",)) for i in range(10)
    ))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert batch_sizes[-1] == 10  # one transaction for all ten
    assert isinstance(results[7], sqlite3.IntegrityError)  # the second "same" only
    assert [r for i, r in enumerate(results) if i != 7] == [1] * 9
    assert await names(database) == [f"n{i}" for i in range(3)] + ["same"] + [f"n{i}" for i in range(4, 10) if i != 7]


async def test_a_failing_transaction_in_a_batch_keeps_none_of_its_statements(database, batch_sizes):
    async def two_then_fail(tx) -> None:
        await tx.execute("INSERT INTO t (name) VALUES ('half-1')")
        await tx.execute("INSERT INTO t (name) VALUES ('half-2')")
        raise ValueError("changed my mind")

    before, failing, after = await queued_together(
        database,
        database.execute("INSERT INTO t (name) VALUES ('before')"),
        database.run(two_then_fail),
        database.execute("INSERT INTO t (name) VALUES ('after')"),
    )
    assert await before == 1 and await after == 1
    with pytest.raises(ValueError, match="changed my mind"):
        await failing
    assert batch_sizes[-1] == 3  # the three shared one transaction
    assert await names(database) == ["before", "after"]


async def test_when_the_batch_transaction_is_lost_every_caller_fails_and_nothing_is_kept(database, batch_sizes):
    # SQLite rolls a whole transaction back by itself on some errors (a full disk, an I/O
    # error); a work that ends the transaction stands in for that here.
    async def lose_the_transaction(tx) -> None:
        await tx.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    first, lost, last = await queued_together(
        database,
        database.execute("INSERT INTO t (name) VALUES ('first')"),
        database.run(lose_the_transaction),
        database.execute("INSERT INTO t (name) VALUES ('last')"),
    )
    for task in (first, lost, last):
        with pytest.raises(StoreUnwritable, match="disk is full"):  # the store port's error, SQLite's as its cause
            await task
    assert batch_sizes[-1] == 3
    assert await names(database) == []  # "first" was told it failed, and it is not stored
    assert await database.execute("INSERT INTO t (name) VALUES ('later')") == 1  # the connection still works


async def test_a_caller_cancelled_while_queued_never_runs(database):
    holder, release = await hold_worker(database)
    queued = asyncio.create_task(database.execute("INSERT INTO t (name) VALUES ('cancelled')"))
    kept = asyncio.create_task(database.execute("INSERT INTO t (name) VALUES ('kept')"))
    await asyncio.sleep(0)
    queued.cancel()
    release.set()
    await holder
    assert await kept == 1
    assert queued.cancelled()
    assert await names(database) == ["kept"]


async def test_close_finishes_the_queued_work(tmp_path):
    database = await db.Database.open(tmp_path / "close.db")
    await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    pending = [asyncio.create_task(database.execute("INSERT INTO t (name) VALUES (?)", (f"n{i}",))) for i in range(20)]
    await asyncio.sleep(0)
    await database.close()
    assert [await task for task in pending] == [1] * 20
    with pytest.raises(RuntimeError, match="the database is closed"):
        await database.execute("INSERT INTO t (name) VALUES ('late')")
    reopened = await db.Database.open(tmp_path / "close.db")
    try:
        assert len(await names(reopened)) == 20
    finally:
        await reopened.close()


async def assert_closed_with_nothing_stored(path) -> None:
    """Checkpointed and closed (no -wal file left), and no row of t was kept."""
    assert not path.with_name(path.name + "-wal").exists()
    reopened = await db.Database.open(path)
    try:
        assert await names(reopened) == []
    finally:
        await reopened.close()


async def test_close_still_closes_when_the_batch_task_was_cancelled(tmp_path):
    # At shutdown the loop cancels every task, the database's batch task included.
    database = await db.Database.open(tmp_path / "cancelled.db")
    await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    holder, release = await hold_worker(database)
    queued = asyncio.create_task(database.execute("INSERT INTO t (name) VALUES ('queued')"))
    await asyncio.sleep(0)
    database._flusher.cancel()
    release.set()
    await database.close()  # does not raise the batch task's cancellation
    await asyncio.wait([holder, queued])
    assert holder.cancelled() and queued.cancelled()  # nobody waits forever for an answer
    await assert_closed_with_nothing_stored(tmp_path / "cancelled.db")


async def test_close_still_closes_when_the_batch_task_was_cancelled_before_it_started(tmp_path):
    database = await db.Database.open(tmp_path / "unstarted.db")
    await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    queued = asyncio.create_task(database.execute("INSERT INTO t (name) VALUES ('queued')"))
    await asyncio.sleep(0)  # queued; its batch task is created but has not run a step
    database._flusher.cancel()
    await asyncio.wait_for(database.close(), timeout=5)
    await asyncio.wait([queued])
    assert queued.cancelled()
    await assert_closed_with_nothing_stored(tmp_path / "unstarted.db")


async def test_cancelling_close_itself_is_not_swallowed(database):
    holder, release = await hold_worker(database)
    closing = asyncio.create_task(database.close())
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.wait([closing])
    release.set()
    await holder
    assert closing.cancelled()


async def test_a_lookup_sees_what_was_committed_and_never_waits_for_the_worker(database):
    await database.execute("INSERT INTO t (name) VALUES ('committed')")
    holder, release = await hold_worker(database)  # the worker is busy inside a transaction
    try:
        row = await asyncio.wait_for(database.lookup_one("SELECT name FROM t WHERE name = ?", ("committed",)), 1)
        assert row["name"] == "committed"
    finally:
        release.set()
        await holder


async def test_a_lookup_over_its_budget_is_asked_again_on_the_worker(database, monkeypatch, batch_sizes):
    monkeypatch.setattr(db, "LOOKUP_BUDGET_SECONDS", 0.0)
    count = ("SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)"
             " SELECT x FROM c)")
    row = await database.lookup_one(count)
    assert row[0] == 300000
    assert batch_sizes == [1]  # interrupted on the loop's thread, answered by the worker


async def test_lookups_are_reads_only(database):
    with pytest.raises(ValueError, match="lookups are SELECT statements"):
        await database.lookup_all("DELETE FROM t")
    # The loop's connection is query-only even if a SELECT-looking statement tried to write.
    with pytest.raises(sqlite3.OperationalError):
        database._reader.execute("INSERT INTO t (name) VALUES ('no')")


async def test_a_lookup_meeting_an_io_error_raises_the_ports_error(database, monkeypatch):
    """Lookups run on the loop's own connection: its failures leave in the port's terms too (an
    API-token check meeting a disk I/O error is a 503, not a 500)."""

    class FailingReader:
        def execute(self, sql, params=()):
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(database, "_reader", FailingReader())
    with pytest.raises(StoreUnwritable, match="disk I/O error"):
        await database.lookup_one("SELECT 1")


class PublicOnly:
    """An aiosqlite connection that refuses every private attribute (a name with a leading "_")."""

    def __init__(self, conn) -> None:
        object.__setattr__(self, "_wrapped", conn)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AssertionError(f"the store used aiosqlite's private Connection.{name}")
        return getattr(object.__getattribute__(self, "_wrapped"), name)

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            raise AssertionError(f"the store set aiosqlite's private Connection.{name}")
        setattr(object.__getattribute__(self, "_wrapped"), name, value)


async def test_the_store_uses_only_aiosqlites_public_api(tmp_path, batch_sizes):
    """Issue 10: no pin on aiosqlite's internals. The store's paths (placement, queueing,
    release and promotion, a batch of writes sharing a transaction with one failing, lookups
    asked again through aiosqlite) run through a connection that fails on any private attribute."""
    import random

    from cryptography.fernet import Fernet

    from bot.accounts.crypto import TokenCipher
    from bot.dispatch.models import JobStatus, Verb
    from bot.store import NewJob
    from bot.store.sqlite.accounts import AccountRepository
    from bot.store.sqlite.jobs import JobRepository
    from tests.dispatch_support import add_account

    path = tmp_path / "public.db"
    await (await db.Database.open(path)).close()  # migrated through the normal path
    conn = await db.connect(path)
    database = db.Database(PublicOnly(conn), reader=db.open_reader(path), path=path)
    try:
        accounts = AccountRepository(database, TokenCipher(Fernet.generate_key()))
        await add_account(accounts, "1", "11", max_jobs=1, user="21")
        jobs = JobRepository(database)
        await jobs.heartbeat("t", 1.0)
        rng = random.Random(1)
        new = NewJob("1", "3", "4", Verb.CREATE, {"prompt": "a fox"})
        placed = await jobs.place(new, now=1.0, owner="t", queue_size=1, rng=rng)
        queued = await jobs.place(new, now=1.0, owner="t", queue_size=1, rng=rng)
        assert (placed.queue_position, queued.queue_position) == (None, 1)
        released = await jobs.release(placed.job.job_id, JobStatus.COMPLETED, now=2.0)
        assert released.others_waiting
        promoted = await jobs.promote_waiting("1", now=2.0, owner="t", rng=rng)
        assert [job.job_id for job in promoted] == [queued.job.job_id]
        tasks = await queued_together(database, *(
            database.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", (f"k{i}",)) for i in (0, 1, 2, 3, 4, 1)
        ))
        assert batch_sizes[-1] == 6  # one transaction; the duplicate failed alone
        assert [t.exception() is None for t in tasks] == [True] * 5 + [False]
        assert len(await database.fetchall("SELECT key FROM meta WHERE key LIKE 'k%'")) == 5
        reader, database._reader = database._reader, None  # lookups answered through aiosqlite, as when over budget
        try:
            before = len(batch_sizes)
            assert (await jobs.get(placed.job.job_id)).status is JobStatus.COMPLETED
            assert len(batch_sizes) == before + 1
        finally:
            database._reader = reader
    finally:
        await database.close()


async def test_with_another_bot_process_on_the_file_every_write_is_its_own_transaction(database, batch_sizes):
    """Group commit holds SQLite's write lock across calls to aiosqlite's thread; another process
    sharing the file could starve. While two processes hold fresh leases, nothing is batched."""
    import time

    for owner in ("this-process", "another-process"):
        await database.execute("INSERT INTO processes (owner, heartbeat_at) VALUES (?, ?)", (owner, time.time()))
    database._shared_checked_at = float("-inf")  # look again now, not in a second
    tasks = await queued_together(database, *(
        database.execute("INSERT INTO t (name) VALUES (?)", (f"n{i}",)) for i in range(10)
    ))
    assert [task.result() for task in tasks] == [1] * 10
    assert batch_sizes[-10:] == [1] * 10
    assert len(await names(database)) == 10

    # The other process stopped renewing its lease long ago: batches again.
    await database.execute("UPDATE processes SET heartbeat_at = ? WHERE owner = 'another-process'",
                           (time.time() - db.OTHERS_RECENT_SECONDS - 1,))
    database._shared_checked_at = float("-inf")
    await queued_together(database, *(
        database.execute("INSERT INTO t (name) VALUES (?)", (f"m{i}",)) for i in range(10)
    ))
    assert batch_sizes[-1] == 10


async def test_a_batch_cancelled_while_begin_waits_for_the_lock_leaves_no_transaction_open(tmp_path):
    """BEGIN IMMEDIATE may wait in aiosqlite's thread for another process's lock; if the batch task
    is cancelled meanwhile (the loop shutting down), the BEGIN still runs there later. The ROLLBACK
    queued behind it must close that transaction, or the connection would keep the write lock."""
    import time

    path = tmp_path / "locked.db"
    database = await db.Database.open(path)
    await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def work(tx) -> None:
        await tx.execute("INSERT INTO t (name) VALUES ('never')")

    running = asyncio.create_task(database.run(work))
    await asyncio.sleep(0.2)  # the batch waits in BEGIN IMMEDIATE
    # The other process lets go of the lock a moment after the cancellation: the BEGIN still
    # waiting in aiosqlite's thread then succeeds, before the ROLLBACK queued behind it.
    threading.Timer(0.5, other.execute, ("ROLLBACK",)).start()
    database._flusher.cancel()
    await asyncio.wait([running])
    assert running.cancelled()
    deadline = time.monotonic() + 10
    while database.conn.in_transaction or (await database.fetchone("SELECT 1")) is None:
        assert time.monotonic() < deadline, "a transaction stayed open on the connection"
        await asyncio.sleep(0.05)
    other.execute("BEGIN IMMEDIATE")  # the file takes another writer: nothing holds its lock
    other.execute("ROLLBACK")
    other.close()
    await database.close()
    await assert_closed_with_nothing_stored(path)
