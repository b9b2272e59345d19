"""A bot process is SIGKILLed in the middle of its jobs; the next start takes them over.

The dying process is real (``tests/processes/recovery_worker.py``): its own Dispatcher
and SimulatedBackend place and submit the jobs on the shared database file, then it is
killed with ``os.kill(pid, SIGKILL)`` — no ``close()``, no lease dropped, its WAL as it was.
The restart is a new Dispatcher in this process on the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from bot.store.sqlite.accounts import AccountRepository
from bot.store.sqlite.database import Database
from bot.dispatch.backends.simulated import SimulatedBackend
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import FINAL, Job, JobStatus, Verb
from bot.store.sqlite.jobs import JobRepository
from tests.dispatch_support import add_account, slots
from tests.processes.common import ASKED_IN, BODY, MEMBER, start_worker

G = "920000000000000001"
A1, A2 = "920000000000000011", "920000000000000012"
RESTART_TIMEOUT_DETAILS = "The bot stopped while the job ran and it was past its timeout when the bot came back"


class ResumingBackend(SimulatedBackend):
    """The simulated backend, remembering which jobs it resumed and for how long."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.resumed: dict[str, float] = {}
        self.owners: dict[str, str | None] = {}  # job id -> the process that owned it when handed over

    async def submit(self, job: Job, token: str) -> None:
        self.owners[job.job_id] = job.owner
        await super().submit(job, token)

    async def resume(self, jobs: list[Job], token: str) -> None:
        for job in jobs:
            self.resumed[job.job_id] = self.duration - (self._clock() - (job.submitted_at or job.created_at))
        await super().resume(jobs, token)


class FinalStates:
    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.seen: list[tuple[str, str]] = []
        self.all_final = asyncio.Event()

    async def job_changed(self, job: Job) -> None:
        self.seen.append((job.job_id, job.status.value))
        if self.expected <= {j for j, s in self.seen if JobStatus(s) in FINAL}:
            self.all_final.set()

    def finals(self) -> Counter[str]:
        return Counter(j for j, s in self.seen if JobStatus(s) in FINAL)


@pytest.fixture
async def shared(tmp_path):
    """The database file both processes use, with its key and account repository."""
    key = Fernet.generate_key().decode()
    path = tmp_path / "shared.db"
    database = await Database.open(path)
    try:
        yield path, key, database, AccountRepository(database, TokenCipher(key))
    finally:
        await database.close()


async def run_until_killed(path: Path, key: str, **options) -> dict:
    """Starts the worker, waits until its jobs are submitted, and SIGKILLs it."""
    args = ["--db", str(path), "--guild", G]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    worker = await start_worker("recovery_worker", args, key)
    try:
        line = await asyncio.wait_for(worker.stdout.readline(), 60)
        if not line:
            _, err = await worker.communicate()
            raise AssertionError(f"worker ended before it was ready:\n{err.decode()}")
        ready = json.loads(line)
        assert ready["ready"] and ready["pid"] == worker.pid
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        await worker.wait()
    assert worker.returncode == -signal.SIGKILL
    return ready


def restarted(database, accounts, backend, listener, **options) -> Dispatcher:
    return Dispatcher(JobRepository(database), accounts, backend, rng=random.Random(11), listeners=[listener], **options)


async def test_killed_process_jobs_are_taken_over_at_once_and_complete(shared):
    path, key, database, accounts = shared
    await add_account(accounts, G, A1, max_jobs=3, user="1")
    await add_account(accounts, G, A2, max_jobs=3, user="2")
    duration = 3.0
    dead = await run_until_killed(path, key, jobs=5, duration=duration, timeout=900)
    jobs = set(dead["placed"])
    assert len(jobs) == 5 and dead["queued"] == []
    rows = await database.fetchall("SELECT * FROM jobs")
    assert {r["job_id"] for r in rows} == jobs
    assert all(r["owner"] == dead["owner"] and r["slot_held"] and r["submitted_at"] for r in rows)
    assert {r["account_channel_id"] for r in rows} == {A1, A2}  # 5 jobs, 3 slots each: both used

    backend = ResumingBackend(duration=duration)
    listener = FinalStates(jobs)
    dispatcher = restarted(database, accounts, backend, listener, job_timeout=900.0)
    try:
        await dispatcher.start()
        # Taken over by start() itself: the dead process's lease had not expired (its
        # heartbeat is seconds old, the TTL 90 s), the same-host pid check found it gone.
        lease = await database.fetchone("SELECT heartbeat_at FROM processes WHERE owner = ?", (dead["owner"],))
        assert lease is not None and lease[0] >= time.time() - dispatcher.lease_ttl
        owners = await database.fetchall("SELECT owner FROM jobs WHERE slot_held = 1")
        assert [r[0] for r in owners] == [dispatcher.owner] * 5
        # Resumed for the time they had left, not submitted again from the start.
        assert set(backend.resumed) == jobs
        assert all(remaining < duration for remaining in backend.resumed.values()), backend.resumed

        await asyncio.wait_for(listener.all_final.wait(), 60)
        await dispatcher.wait_idle()
        ended = await database.fetchall("SELECT * FROM jobs")
        assert {(r["job_id"], r["status"]) for r in ended} == {(j, "completed") for j in jobs}
        # Each ran its full simulated duration counted from the dead process's submission.
        assert all(r["updated_at"] >= r["submitted_at"] + duration - 0.05 for r in ended)
        assert await slots(database, A1) == 0 and await slots(database, A2) == 0
        assert listener.finals() == Counter({j: 1 for j in jobs})
    finally:
        await dispatcher.close()


async def test_jobs_past_their_timeout_at_restart_fail_and_free_their_slots(shared):
    path, key, database, accounts = shared
    await add_account(accounts, G, A1, max_jobs=2, user="1")
    await add_account(accounts, G, A2, max_jobs=1, user="2")
    # The dying process would run them for a minute, with a 900 s timeout it never reaches.
    dead = await run_until_killed(path, key, jobs=3, duration=60, timeout=900)
    jobs = set(dead["placed"])
    assert len(jobs) == 3

    # The restart comes 1,000 s later by the clock it is given: past every job's timeout.
    later = 1_000.0
    backend = ResumingBackend(duration=60, clock=lambda: time.time() + later)
    listener = FinalStates(jobs)
    dispatcher = restarted(
        database, accounts, backend, listener, job_timeout=900.0, clock=lambda: time.time() + later
    )
    try:
        await dispatcher.start()
        # Decided by start() itself (its recovery), not by a later sweep.
        ended = await database.fetchall("SELECT * FROM jobs")
        assert {(r["job_id"], r["status"], r["error"], r["error_details"]) for r in ended} == {
            (j, "failed", "Timed out", RESTART_TIMEOUT_DETAILS) for j in jobs
        }
        # Ended by this process's recovery (only it writes RESTART_TIMEOUT_DETAILS); an ended job
        # names no process any more (migration 0005: only a job holding a slot has an owner).
        assert all(not r["slot_held"] and r["owner"] is None for r in ended)
        assert backend.resumed == {}
        await dispatcher.wait_idle()  # the listeners are told in the background
        assert listener.finals() == Counter({j: 1 for j in jobs})
        # The freed slots are usable again: all three fit.
        for _ in range(3):
            placed = await dispatcher.submit(
                guild_id=G, requester_id=MEMBER, request_channel_id=ASKED_IN, verb=Verb.CREATE, body=BODY
            )
            assert placed.queue_position is None
        await dispatcher.wait_idle()
        assert await slots(database, A1) == 2 and await slots(database, A2) == 1
    finally:
        await dispatcher.close()


async def test_queued_job_of_a_killed_process_is_placed_and_completes(shared):
    path, key, database, accounts = shared
    await add_account(accounts, G, A1, max_jobs=1, user="1")
    await add_account(accounts, G, A2, max_jobs=1, user="2")
    duration = 2.0
    dead = await run_until_killed(path, key, jobs=3, duration=duration, timeout=900, queue_size=2)
    running, waiting = set(dead["placed"]), dead["queued"]
    assert len(running) == 2 and len(waiting) == 1
    queued = await database.fetchone("SELECT * FROM jobs WHERE job_id = ?", (waiting[0],))
    assert (queued["queued"], queued["slot_held"], queued["account_channel_id"], queued["owner"]) == (1, 0, None, None)

    backend = ResumingBackend(duration=duration)
    listener = FinalStates(running | {waiting[0]})
    dispatcher = restarted(database, accounts, backend, listener, job_timeout=900.0, queue_size=2)
    try:
        await dispatcher.start()
        assert set(backend.resumed) == running
        await asyncio.wait_for(listener.all_final.wait(), 60)
        await dispatcher.wait_idle()
        ended = {r["job_id"]: r for r in await database.fetchall("SELECT * FROM jobs")}
        assert {j: r["status"] for j, r in ended.items()} == {j: "completed" for j in running | {waiting[0]}}
        late = ended[waiting[0]]
        # Placed by the restarted process (it owned the job when it handed it over); ended, it has no owner.
        assert late["account_channel_id"] in (A1, A2) and backend.owners[waiting[0]] == dispatcher.owner
        assert late["owner"] is None
        assert not late["queued"] and not late["slot_held"]
        # It got a slot only once a resumed job had freed one, and then ran its full duration.
        first_freed = min(ended[j]["updated_at"] for j in running)
        assert late["submitted_at"] >= first_freed
        assert late["updated_at"] >= late["submitted_at"] + duration - 0.05
        assert await slots(database, A1) == 0 and await slots(database, A2) == 0
        assert listener.finals() == Counter({j: 1 for j in running | {waiting[0]}})
    finally:
        await dispatcher.close()
