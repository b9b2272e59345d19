"""No over-commit: 1,000 concurrent submissions from two processes sharing one database file.

"Every account's executing count stays ≤ maxJobs throughout" is checked by SQLite itself,
not sampled: test-only triggers on ``jobs`` run inside every transaction that inserts a
job or changes its ``state`` / ``account_channel_id`` (the only ways a slot is taken),
whichever process runs it, and see the counts as that transaction leaves them. They
never abort anything; they write what they see to test-only tables:

* ``overcommit_log``: one row whenever any account holds more slots than its ``max_jobs``;
* ``slot_peak``: the most slots each account ever held (proves every account was filled);
* ``resting_log``: a slot taken on an account out of rotation;
* ``overlap``: slots taken while the *other* process held one (proves the two processes
  really competed for the same accounts at the same time, not one after the other).

The two workers (``tests/processes/overcommit_worker.py``) open the file, start a real
Dispatcher, print ``ready`` and wait for a barrier file this test creates once both are
ready, so their 500 submissions each start together.
"""

from __future__ import annotations

import asyncio
import json

from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from bot.store.sqlite.accounts import AccountRepository
from bot.store.sqlite.database import Database
from bot.store.sqlite.jobs import JobRepository
from tests.dispatch_support import add_account
from tests.processes.common import start_worker

G = "910000000000000001"
# Total capacity 10, far below 2 × 500 concurrent submissions.
ACCOUNTS = {f"91000000000000001{n}": n for n in (1, 2, 3, 4)}
RESTING = "910000000000000019"
JOBS_PER_WORKER = 500

_CHECKS = """
    INSERT INTO overcommit_log (account_channel_id, executing, max_jobs, job_id, event)
        SELECT a.channel_id, held.n, a.max_jobs, NEW.job_id, '{event}'
        FROM accounts a
        JOIN (SELECT account_channel_id AS channel_id, COUNT(*) AS n FROM jobs
              WHERE slot_held = 1 GROUP BY account_channel_id) held ON held.channel_id = a.channel_id
        WHERE held.n > a.max_jobs;
    INSERT INTO slot_peak (account_channel_id, peak)
        SELECT NEW.account_channel_id,
               (SELECT COUNT(*) FROM jobs WHERE account_channel_id = NEW.account_channel_id AND slot_held = 1)
        WHERE NEW.slot_held = 1 AND NEW.account_channel_id IS NOT NULL
        ON CONFLICT (account_channel_id) DO UPDATE SET peak = max(peak, excluded.peak);
    INSERT INTO resting_log (job_id, account_channel_id)
        SELECT NEW.job_id, a.channel_id FROM accounts a
        WHERE a.channel_id = NEW.account_channel_id AND a.in_rotation = 0 AND NEW.slot_held = 1;
    UPDATE overlap SET n = n + 1
        WHERE NEW.slot_held = 1
          AND EXISTS (SELECT 1 FROM jobs j WHERE j.slot_held = 1 AND j.owner IS NOT NEW.owner);
"""

PROBES = [
    "CREATE TABLE overcommit_log (id INTEGER PRIMARY KEY, account_channel_id TEXT, executing INTEGER,"
    " max_jobs INTEGER, job_id TEXT, event TEXT)",
    "CREATE TABLE slot_peak (account_channel_id TEXT PRIMARY KEY, peak INTEGER NOT NULL)",
    "CREATE TABLE resting_log (job_id TEXT, account_channel_id TEXT)",
    "CREATE TABLE overlap (n INTEGER NOT NULL)",
    "INSERT INTO overlap (n) VALUES (0)",
    # AFTER, not BEFORE, and no RAISE: the counts are those the statement leaves behind,
    # and a violation is recorded for the assertions instead of being prevented.
    f"CREATE TRIGGER test_overcommit_insert AFTER INSERT ON jobs BEGIN {_CHECKS.format(event='insert')} END",
    "CREATE TRIGGER test_overcommit_update AFTER UPDATE OF state, account_channel_id ON jobs"
    f" BEGIN {_CHECKS.format(event='update')} END",
]


async def install_probes(tx) -> None:
    for statement in PROBES:
        await tx.execute(statement)


async def test_probes_see_an_overcommit(tmp_path):
    """The triggers themselves work: a third slot on a maxJobs-2 account is logged, not refused."""
    database = await Database.open(tmp_path / "probe.db")
    try:
        await add_account(
            AccountRepository(database, TokenCipher(Fernet.generate_key())), G, RESTING, max_jobs=2, user="9"
        )
        await database.run(install_probes)

        async def overfill(tx) -> None:
            for n in range(3):
                await tx.execute(
                    "INSERT INTO jobs (job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,"
                    " request_channel_id, verb, params, status, state, owner, created_at, updated_at)"
                    " VALUES (?, ?, ?, '9', 2, 'm', 'c', 'create', '{}', 'created', 'placed', ?, 0, 0)",
                    (f"job:{n}", G, RESTING, f"owner-{n % 2}"),
                )

        for owner in ("owner-0", "owner-1"):
            await JobRepository(database).heartbeat(owner, 0.0)
        await database.run(overfill)
        log = await database.fetchall("SELECT account_channel_id, executing, max_jobs FROM overcommit_log")
        assert [tuple(r) for r in log] == [(RESTING, 3, 2)]
        assert (await database.fetchone("SELECT peak FROM slot_peak"))[0] == 3
        assert (await database.fetchone("SELECT n FROM overlap"))[0] == 2
        await database.execute("UPDATE accounts SET in_rotation = 0")
        await database.execute("UPDATE jobs SET state = 'placed' WHERE job_id = 'job:0'")
        assert (await database.fetchone("SELECT COUNT(*) FROM resting_log"))[0] == 1
    finally:
        await database.close()


async def test_no_overcommit_from_two_processes_sharing_one_file(tmp_path):
    path = tmp_path / "shared.db"
    key = Fernet.generate_key().decode()
    database = await Database.open(path)
    try:
        accounts = AccountRepository(database, TokenCipher(key))
        for channel, max_jobs in ACCOUNTS.items():
            await add_account(accounts, G, channel, max_jobs=max_jobs, user=channel[-6:])
        await add_account(accounts, G, RESTING, max_jobs=50, user=RESTING[-6:])
        await accounts.set_rotation(G, RESTING, in_rotation=False, error="Blocked")
        await database.run(install_probes)

        barrier = tmp_path / "go"
        workers = []
        try:
            for seed in (1, 2):
                workers.append(await start_worker(
                    "overcommit_worker",
                    ["--db", str(path), "--guild", G, "--barrier", str(barrier), "--jobs", str(JOBS_PER_WORKER),
                     "--seed", str(seed)],
                    key,
                ))
            for worker in workers:
                line = await asyncio.wait_for(worker.stdout.readline(), 60)
                if line != b"ready\n":
                    _, err = await worker.communicate()
                    raise AssertionError(f"worker did not get ready: {line!r}\n{err.decode()}")
            barrier.touch()  # both are up: release them together
            outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate() for w in workers)), 150)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()

        summaries = []
        for worker, (out, err) in zip(workers, outputs):
            assert worker.returncode == 0, err.decode()
            summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
        print(json.dumps([{k: v for k, v in s.items() if k != "job_ids"} for s in summaries], indent=1))

        # Every submission was placed and completed, each final state told once.
        for summary in summaries:
            assert summary["placed"] == summary["unique_jobs"] == JOBS_PER_WORKER
            assert summary["statuses"] == {"completed": JOBS_PER_WORKER}
            assert summary["notified_more_than_once"] == []
            # Jobs a process held at once can never exceed what it placed into free slots.
            assert 1 <= summary["max_concurrent"] <= sum(ACCOUNTS.values())
        counts = {
            row["status"]: row["n"]
            for row in await database.fetchall("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        }
        assert counts == {"completed": 2 * JOBS_PER_WORKER}
        # Each process placed its own jobs, none twice; both leases were dropped at their clean
        # exit, which leaves the finished jobs with no owner (a foreign key, ON DELETE SET NULL).
        first, second = ({*summary["job_ids"]} for summary in summaries)
        assert len(first) == len(second) == JOBS_PER_WORKER and not first & second
        stored = {row["job_id"] for row in await database.fetchall("SELECT job_id FROM jobs")}
        assert stored == first | second
        owners = await database.fetchall("SELECT owner, COUNT(*) AS n FROM jobs GROUP BY owner")
        assert [tuple(r) for r in owners] == [(None, 2 * JOBS_PER_WORKER)]

        # Throughout: not one transaction of either process left an account over its maxJobs.
        violations = await database.fetchall("SELECT * FROM overcommit_log")
        assert [dict(r) for r in violations] == []
        # The resting account never got a job, at any moment.
        assert (await database.fetchone("SELECT COUNT(*) FROM resting_log"))[0] == 0
        assert (await database.fetchone("SELECT COUNT(*) FROM jobs WHERE account_channel_id = ?", (RESTING,)))[0] == 0
        # At the end nothing holds a slot or waits.
        assert (await database.fetchone("SELECT COUNT(*) FROM jobs WHERE slot_held = 1 OR queued = 1"))[0] == 0

        # Not vacuous: there was contention, every account was filled to its maxJobs, and
        # the two processes held slots at the same time.
        assert all(s["retried_429"] > 0 for s in summaries), summaries
        peaks = {r[0]: r[1] for r in await database.fetchall("SELECT account_channel_id, peak FROM slot_peak")}
        assert peaks == ACCOUNTS
        overlap = (await database.fetchone("SELECT n FROM overlap"))[0]
        print(f"slot peaks {peaks}; slots taken while the other process held one: {overlap}")
        assert overlap > 0
        first, second = summaries
        assert first["started_at"] < second["ended_at"] and second["started_at"] < first["ended_at"]
    finally:
        await database.close()
