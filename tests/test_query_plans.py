"""Periodic work costs O(work due), not O(table): no statement the bot runs scans ``jobs``.

Jobs are kept 31 days; a busy bot has a million rows. Every statement that the dispatcher,
placement, the account service and the API tokens run during a broad workload (submit, place,
queue, press, cancel, finish, time out, recover a dead process's jobs, promote waiting jobs,
queue positions, purge) is recorded with SQLite's trace callback, and each is asked
``EXPLAIN QUERY PLAN`` on a database holding 20,000 finished jobs (no ANALYZE, as the bot runs).
A full scan of ``jobs``, or a scan of one of its indexes that covers every row, fails the test
and names the statement. A scan of a partial index (only live rows) is fine.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3

from bot.store.sqlite.accounts import AccountRepository
from bot.dispatch.dispatcher import RETENTION_SECONDS
from bot.dispatch.models import Verb
from bot.errors import ApiError
from bot.store.sqlite import bulk
from bot.store.sqlite.tokens import ApiTokenRepository
from tests.dispatch_support import Clock, ManualBackend, add_account, make_dispatcher

GUILD = "111111111111111111"
CHANNELS = ("333333333333333333", "444444444444444444")
FINISHED = 20_000
BODY = {"prompt": "a red fox", "style": "Realistic"}


def _finished_rows(now: float) -> list[dict]:
    return [
        dict(job_id=f"job:old-{n}", guild_id=GUILD, account_channel_id=CHANNELS[n % 2],
             account_user_id="700000000000000001", max_jobs=2, params='{"prompt": "old"}',
             created_at=now - 3600 - n, submitted_at=now - 3600 - n)
        for n in range(FINISHED)
    ]


def _scans_of_jobs(conn: sqlite3.Connection, statement: str, partial: set[str]) -> list[str]:
    bad = []
    for row in conn.execute("EXPLAIN QUERY PLAN " + statement):
        detail = row[3]
        # "SCAN jobs" since SQLite 3.36, "SCAN TABLE jobs" before it.
        match = re.match(r"SCAN (?:TABLE )?(\w+)(?: USING (?:COVERING )?INDEX (\w+))?", detail)
        if not match or match.group(1) not in ("jobs", "j"):
            continue
        if match.group(2) in partial:
            continue  # a partial index holds only live rows
        bad.append(detail)
    return bad



async def _statements_of(database, read) -> tuple[object, list[str]]:
    """What ``read()`` returned, and the statements on the jobs table it ran (on either of the
    database's connections: lookups are read on the loop's own)."""
    seen: list[str] = []
    await database.conn.set_trace_callback(seen.append)
    if database._reader is not None:
        database._reader.set_trace_callback(seen.append)
    try:
        result = await read()
    finally:
        await database.conn.set_trace_callback(None)
        if database._reader is not None:
            database._reader.set_trace_callback(None)
    return result, [s for s in seen if re.search(r"\bjobs\b", s) and s.lstrip().upper().startswith(("SELECT", "UPDATE"))]


def _plan(database, statement: str) -> list[str]:
    conn = sqlite3.connect(database.path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
    finally:
        conn.close()

async def test_no_statement_scans_the_jobs_table(database, cipher, tmp_path):
    clock = Clock()
    await database.run(lambda tx: bulk.insert_jobs(tx, _finished_rows(clock.now)))
    seen: set[str] = set()
    await database.conn.set_trace_callback(seen.add)
    if database._reader is not None:
        database._reader.set_trace_callback(seen.add)

    repository = AccountRepository(database, cipher)
    for n, channel in enumerate(CHANNELS):
        await add_account(repository, GUILD, channel, max_jobs=1, user=f"70000000000000000{n + 2}")
    backend = ManualBackend()
    dispatcher = make_dispatcher(database, repository, backend, clock=clock, queue_size=5)
    backend.events = dispatcher
    await dispatcher.start()
    first = (await dispatcher.submit(guild_id=GUILD, requester_id="1", request_channel_id="2", verb=Verb.CREATE,
                                     body=BODY)).job
    second = (await dispatcher.submit(guild_id=GUILD, requester_id="1", request_channel_id="2", verb=Verb.CREATE,
                                      body=BODY)).job
    waiting = await dispatcher.submit(guild_id=GUILD, requester_id="1", request_channel_id="2", verb=Verb.CREATE,
                                      body=BODY)
    assert waiting.queue_position == 1
    await dispatcher.wait_idle()
    await dispatcher.queue_position(waiting.job)
    await dispatcher.executing(GUILD)
    await dispatcher.cancel(waiting.job.job_id, guild_id=GUILD, user_id="1", is_manager=True)  # while queued
    await backend.complete(first.job_id)
    await dispatcher.wait_idle()
    await dispatcher.press(guild_id=GUILD, requester_id="1", request_channel_id="2", job_id=first.job_id, button="U1")
    await dispatcher.cancel(second.job_id, guild_id=GUILD, user_id="1", is_manager=True)  # while running
    await dispatcher.wait_idle()
    await dispatcher.get(first.job_id, GUILD)
    # Time passes: jobs time out, a dead process's lease expires, old jobs are purged.
    clock.now += dispatcher.job_timeout + 60
    await dispatcher.sweep()
    clock.now += RETENTION_SECONDS
    await dispatcher.sweep()
    await dispatcher.recover()
    await repository.list(GUILD)
    await repository.get(GUILD, CHANNELS[0])
    with contextlib.suppress(ApiError):  # busy or not, its statements ran
        await repository.delete(GUILD, CHANNELS[1])
    tokens = ApiTokenRepository(database)
    token = await tokens.create(GUILD, "1")
    await tokens.guild_of(token)
    await tokens.revoke_all(GUILD)
    await dispatcher.close()
    await database.conn.set_trace_callback(None)

    # The capacity guard (bot/store/sqlite/placement.py): every transaction takes the write lock
    # before its first read (BEGIN IMMEDIATE, never a plain BEGIN), and the one-statement
    # placement counts the free slots inside its own INSERT.
    begins = {" ".join(statement.upper().split()) for statement in seen if statement.lstrip().upper().startswith("BEGIN")}
    assert begins == {"BEGIN IMMEDIATE"}
    placed_in_one = [statement for statement in seen if statement.lstrip().startswith("WITH free AS")]
    assert placed_in_one and all("INSERT INTO jobs" in s and "slot_held = 1) < a.max_jobs" in s for s in placed_in_one)

    touching_jobs = sorted(s for s in seen if re.search(r"\bjobs\b", s) and not s.lstrip().upper().startswith(
        ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "CREATE", "INSERT INTO JOBS (")))
    assert len(touching_jobs) >= 20, touching_jobs  # the workload reached the store broadly
    conn = sqlite3.connect(database.path)
    try:
        partial = {name for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                   if sql and " WHERE " in sql.upper()}
        # Restore the 20,000 finished rows the purge removed, so the plans are those of a big table.
        conn.execute("DELETE FROM jobs WHERE job_id LIKE 'job:old-%'")
        conn.executemany(bulk.INSERT_JOBS, bulk.job_rows(_finished_rows(clock.now)))
        conn.commit()
        failures = {statement: bad for statement in touching_jobs if (bad := _scans_of_jobs(conn, statement, partial))}
    finally:
        conn.close()
    assert failures == {}, "\n".join(f"{bad}: {statement[:300]}" for statement, bad in failures.items())


async def test_purge_deletes_old_ended_jobs_in_bounded_transactions_and_keeps_live_ones(database):
    from bot.store.sqlite.jobs import JobRepository

    now = 1_800_000_000.0
    rows = _finished_rows(now)[:1234]
    # Old but still live: holding a slot, waiting, or still open at PixVerse. Never purged.
    old = dict(created_at=now - 10**7)
    on_account = dict(account_channel_id=CHANNELS[0], account_user_id="700000000000000001", max_jobs=2,
                      submitted_at=now - 10**7)
    live = [
        dict(job_id="job:live-0", guild_id=GUILD, state="submitted", status="progress", **on_account, **old),
        dict(job_id="job:live-1", guild_id=GUILD, state="waiting", status="created", **old),
        dict(job_id="job:live-2", guild_id=GUILD, pixverse_open=1, **on_account, **old),
    ]
    await database.run(lambda tx: bulk.insert_jobs(tx, rows + live))
    deletes: list[int] = []
    execute = database.execute

    async def counting(sql, params=()):
        changed = await execute(sql, params)
        deletes.append(changed)
        return changed

    database.execute = counting
    deleted = await JobRepository(database).purge(before=now, batch=500)
    assert deleted == 1234
    assert deletes == [500, 500, 234]  # each its own statement, in its own transaction
    remaining = [row[0] for row in await database.fetchall("SELECT job_id FROM jobs ORDER BY job_id")]
    assert remaining == ["job:live-0", "job:live-1", "job:live-2"]


async def test_a_members_last_jobs_are_an_index_search_read_newest_first(database):
    """JobStore.of_member on a server with 20,000 finished jobs of that member: a search of the
    index jobs_member read backwards (no sort of the member's history, no scan of the table), and
    recording a status message is a search by job id."""
    from bot.store.sqlite.jobs import JobRepository

    now = 1_800_000_000.0
    member = bulk.JOB_DEFAULTS["requester_id"]  # every finished row's requester
    other = [dict(job_id=f"job:other-{n}", guild_id=GUILD, requester_id="900000000000000009", created_at=now - n)
             for n in range(2000)]
    await database.run(lambda tx: bulk.insert_jobs(tx, _finished_rows(now) + other))
    jobs = JobRepository(database)

    async def read():
        last = await jobs.of_member(GUILD, member, limit=10)
        assert await jobs.set_status_message("job:old-0", "600000000000000001", in_channel=True)
        return last

    last, statements = await _statements_of(database, read)
    assert [j.job_id for j in last] == [f"job:old-{n}" for n in range(FINISHED - 1, FINISHED - 11, -1)]
    (of_member,) = [s for s in statements if "requester_id" in s]
    (recording,) = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    plan = _plan(database, of_member)
    assert plan == ["SEARCH jobs USING INDEX jobs_member (guild_id=? AND requester_id=?)"], plan
    recorded = _plan(database, recording)
    assert len(recorded) == 1 and recorded[0].startswith("SEARCH jobs USING INDEX sqlite_autoindex_jobs_1"), recorded


async def test_a_servers_last_day_of_ended_jobs_is_an_index_search(database):
    """JobStore.ended_since (/pixverse-status) on a server with 20,000 finished jobs: a search of
    the partial index jobs_ended by server and time, not a scan of the month kept."""
    from bot.store.sqlite.jobs import JobRepository

    now = 1_800_000_000.0
    await database.run(lambda tx: bulk.insert_jobs(tx, _finished_rows(now)))
    ended, (statement,) = await _statements_of(
        database, lambda: JobRepository(database).ended_since(GUILD, since=now - 3600))
    assert sum(ended.counts.values()) > 0
    plan = _plan(database, statement)
    assert plan == ["SEARCH jobs USING INDEX jobs_ended (guild_id=? AND updated_at>?)"], plan


async def test_the_ended_jobs_whose_end_is_not_shown_are_read_from_their_own_small_index(database):
    """JobStore.final_not_shown, run every minute by every process: among 20,000 finished jobs (history,
    shown) and a few whose end is not shown, a read of the partial index jobs_final_pending only."""
    from bot.store.sqlite.jobs import JobRepository

    now = 1_800_000_000.0
    unshown = [bulk.job_row(job_id=f"job:unshown-{n}", guild_id=GUILD, created_at=now - 60 + n, final_pending=1)
               for n in range(3)]
    await database.run(lambda tx: bulk.insert_jobs(tx, [*_finished_rows(now), *unshown]))
    # Both reads of Dispatcher.show_ends: members' ends, then replyUrl ends (bulk's rows are members').
    for through_api, expected in ((False, ["job:unshown-2", "job:unshown-1", "job:unshown-0"]), (True, [])):
        jobs, (statement,) = await _statements_of(database, lambda: JobRepository(database).final_not_shown(
            ended_before=now, ended_after=now - 86400, through_api=through_api))
        assert [job.job_id for job in jobs] == expected
        plan = _plan(database, statement)
        assert plan == ["SEARCH jobs USING INDEX jobs_final_pending (updated_at>? AND updated_at<?)"], plan
