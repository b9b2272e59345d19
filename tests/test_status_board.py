"""When each job's status message is written (cogs/jobs/status.py), with a recording writer.

The intervals are small and real; a busy machine can only make the gaps longer, never shorter,
so every bound asserted here is one the board must keep whatever the load."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from bot.dispatch.models import Job, JobState, JobStatus, Verb
from cogs.jobs.status import StatusBoard

pytestmark = pytest.mark.asyncio

CHANNEL = "500"


def job(job_id: str = "job:a", *, status: JobStatus = JobStatus.STARTED, progress: int | None = None,
        state: JobState = JobState.SUBMITTED, updated: float = 1.0, channel: str = CHANNEL) -> Job:
    return Job(job_id, "1", "2", "3", 2, "4", channel, Verb.CREATE, {"prompt": "p"}, None, status, state, "me", 0, 1,
               1, 1.0, updated, progress=progress)


def final(base: Job, status: JobStatus = JobStatus.COMPLETED) -> Job:
    return replace(base, status=status, state=JobState.DONE, updated_at=base.updated_at + 100)


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[float, str, str, int | None, object]] = []
        self.gate: asyncio.Event | None = None
        self.failures: list[BaseException] = []

    async def __call__(self, written: Job, position: object) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.writes.append((time.monotonic(), written.job_id, written.state_word, written.progress, position))

    def of(self, job_id: str) -> list[tuple[str, int | None, object]]:
        return [(word, progress, position) for _, j, word, progress, position in self.writes if j == job_id]


async def settle(board: StatusBoard, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while board.pending() or any(c.task for c in board._channels.values()):
            await asyncio.sleep(0.01)


async def test_a_burst_of_progress_is_one_write_per_interval_and_each_state_change_at_once():
    writer = Recorder()
    board = StatusBoard(writer, job_every=0.3, burst=100, window=1)
    started = job()
    board.update(started)
    await asyncio.sleep(0.05)
    began = time.monotonic()
    for percent in range(1, 60):
        board.update(replace(started, status=JobStatus.PROGRESS, progress=percent, updated_at=1 + percent))
        await asyncio.sleep(0.01)
    board.update(final(started))
    elapsed = time.monotonic() - began
    await settle(board)
    seen = writer.of("job:a")
    assert seen[0] == ("started", None, None)
    assert seen[1][0] == "progress"  # a change of state: written at once
    assert seen[-1] == ("completed", None, None)
    # 59 updates; besides the start, the first progress and the end, one write per 0.3 s at most.
    assert len(seen) - 3 <= elapsed / 0.3 + 1
    times = [t for t, _, word, _, _ in writer.writes if word == "progress"]
    assert all(b - a >= 0.3 for a, b in zip(times, times[1:]))


async def test_the_newest_state_wins_and_nothing_older_is_written_over_a_newer_one():
    writer = Recorder()
    writer.gate = asyncio.Event()
    board = StatusBoard(writer, job_every=0, burst=100, window=1)
    started = job()
    board.update(started)
    await asyncio.sleep(0.05)  # the writer holds "started"
    for percent in (10, 20, 30):
        board.update(replace(started, status=JobStatus.PROGRESS, progress=percent, updated_at=2 + percent))
    board.update(replace(started, updated_at=1.5))  # an older snapshot told late
    writer.gate.set()
    await settle(board)
    assert writer.of("job:a") == [("started", None, None), ("progress", 30, None)]
    board.update(final(started, JobStatus.FAILED))
    await settle(board)
    board.update(replace(started, status=JobStatus.PROGRESS, progress=90, updated_at=500))  # after the end
    board.update(replace(started, status=JobStatus.STARTED, updated_at=2))
    await settle(board)
    assert writer.of("job:a") == [("started", None, None), ("progress", 30, None), ("failed", None, None)]


async def test_a_write_that_failed_for_a_passing_reason_is_tried_again_unless_replaced():
    class Passing(Exception):
        pass

    writer = Recorder()
    writer.failures = [Passing()]
    board = StatusBoard(writer, transient=lambda exc: isinstance(exc, Passing), job_every=0, burst=100, window=1,
                        retry_after=0.05)
    board.update(job("job:a"))
    await settle(board)
    assert writer.of("job:a") == [("started", None, None)]  # the 429 passed, the write went out
    writer.failures = [ValueError("for good")]
    board.update(job("job:b"))  # fails for good: dropped, the board goes on
    board.update(job("job:c"))
    await settle(board)
    assert writer.of("job:b") == [] and writer.of("job:c") == [("started", None, None)]


async def test_one_channel_takes_at_most_burst_writes_per_window_and_state_changes_go_first():
    writer = Recorder()
    board = StatusBoard(writer, job_every=10, burst=4, window=0.5)
    jobs = [job(f"job:{n}") for n in range(12)]
    for each in jobs:
        board.update(each)
    board.update(job("job:other", channel="600"))  # another channel is not held up by this one
    await settle(board)
    times = [t for t, j, *_ in writer.writes if j != "job:other"]
    assert len(times) == 12
    assert all(later - times[i] >= 0.5 for i, later in enumerate(times[4:]))  # a 5th write waits its window
    assert writer.writes[0][1] == "job:0" and [j for _, j, *_ in writer.writes if j != "job:other"] == [
        f"job:{n}" for n in range(12)]  # oldest first
    other_at = next(t for t, j, *_ in writer.writes if j == "job:other")
    assert other_at < times[4]


async def test_a_waiting_job_shows_its_new_position_and_an_unchanged_one_is_not_written_again():
    writer = Recorder()
    board = StatusBoard(writer, job_every=0.1, burst=100, window=1)
    waiting = job(status=JobStatus.CREATED, state=JobState.WAITING)
    board.shown(waiting, (2, 3))  # the command's reply showed it
    board.update(waiting, (2, 3))
    await settle(board)
    assert writer.of("job:a") == []
    board.update(waiting, (1, 2))
    await settle(board)
    assert writer.of("job:a") == [("waiting", None, (1, 2))]


async def test_closing_writes_the_last_states_within_its_grace():
    writer = Recorder()
    board = StatusBoard(writer, job_every=10, burst=1, window=0.2)
    for n in range(3):
        board.update(final(job(f"job:{n}")))
    await board.close(grace=5)
    assert [j for _, j, *_ in writer.writes] == ["job:0", "job:1", "job:2"]
    board.update(job("job:late"))  # closed: nothing more
    await asyncio.sleep(0.05)
    assert len(writer.writes) == 3


async def test_a_final_state_that_failed_once_is_written_and_a_late_older_state_never_replaces_it():
    class Passing(Exception):
        pass

    writer = Recorder()
    writer.gate = asyncio.Event()
    writer.failures = [Passing()]
    board = StatusBoard(writer, transient=lambda exc: isinstance(exc, Passing), job_every=0, burst=100, window=1,
                        retry_after=0.05)
    started = job()
    board.update(final(started, JobStatus.CANCELLED))
    await asyncio.sleep(0.05)  # the cancel is being written
    # A progress read before the cancel, told after it (with a later clock), and a queue position
    # read before the start: both older than what is being written.
    board.update(replace(started, status=JobStatus.PROGRESS, progress=80, updated_at=50))
    board.update(job(status=JobStatus.CREATED, state=JobState.WAITING, updated=0.5), (1, 1))
    writer.gate.set()  # the cancel's write fails (a 5xx) and is tried again
    await settle(board)
    assert writer.of("job:a") == [("cancelled", None, None)]


async def test_a_state_being_written_is_not_overtaken_by_an_older_one():
    writer = Recorder()
    writer.gate = asyncio.Event()
    board = StatusBoard(writer, job_every=0, burst=100, window=1)
    started = job(updated=5.0)
    board.update(started)
    await asyncio.sleep(0.05)  # "started" is being written
    board.update(job(status=JobStatus.CREATED, state=JobState.WAITING, updated=1.0), (1, 1))  # read before it
    writer.gate.set()
    await settle(board)
    assert writer.of("job:a") == [("started", None, None)]


async def test_a_write_that_keeps_failing_is_given_up_and_the_channel_goes_on():
    class Passing(Exception):
        pass

    writer = Recorder()
    writer.failures = [Passing() for _ in range(5)]
    board = StatusBoard(writer, transient=lambda exc: isinstance(exc, Passing), job_every=0, burst=100, window=1,
                        retry_after=0.01)
    board.update(job("job:a"))
    board.update(job("job:b"))
    await settle(board)
    assert writer.of("job:a") == [] and writer.of("job:b") == [("started", None, None)]
    assert board._channels == {}  # nothing left behind


async def test_a_queue_read_that_changes_nothing_leaves_nothing_behind():
    writer = Recorder()
    board = StatusBoard(writer, job_every=0.1, burst=100, window=1)
    waiting = job(status=JobStatus.CREATED, state=JobState.WAITING)
    for n in range(200):
        board.shown(replace(waiting, job_id=f"job:{n}", request_channel_id=str(n)), (1, 1))
        board.update(replace(waiting, job_id=f"job:{n}", request_channel_id=str(n)), (1, 1))
    assert board._channels == {} and writer.writes == []
