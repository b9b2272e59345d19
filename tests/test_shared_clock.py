"""The shared clock: this machine's time plus its offset from the database's, and what the operator is told."""

from __future__ import annotations

import logging

import pytest

from bot.dispatch.clock import SharedClock


class Machine:
    """A local clock, a monotonic one and a database clock, moved by hand; a query takes ``trip`` seconds."""

    def __init__(self, local: float, database: float, trip: float = 0.02) -> None:
        self.local, self.database, self.trip, self.mono = local, database, trip, 100.0
        self.down = False

    async def query(self) -> float:
        if self.down:
            raise ConnectionResetError("the database went away")
        # The database reads its clock half way through the round trip.
        self.advance(self.trip / 2)
        seen = self.database
        self.advance(self.trip / 2)
        return seen

    def advance(self, seconds: float) -> None:
        self.local += seconds
        self.database += seconds
        self.mono += seconds

    def clock(self) -> SharedClock:
        return SharedClock(self.query, local=lambda: self.local, monotonic=lambda: self.mono)


async def test_the_time_is_the_databases_measured_from_the_middle_of_the_round_trip():
    machine = Machine(local=1_800_000_000.0, database=1_800_000_600.0, trip=0.2)
    clock = machine.clock()
    assert clock() == 1_800_000_000.0  # before any measure: this machine's
    await clock.sync()
    assert clock.offset == pytest.approx(600.0)
    assert clock() == pytest.approx(machine.database)
    machine.advance(30)
    assert clock() == pytest.approx(machine.database)  # read without a query


async def test_a_slow_answer_does_not_replace_a_good_measure(caplog):
    machine = Machine(local=1_000.0, database=1_600.0)
    clock = machine.clock()
    await clock.sync()
    machine.database += 5  # the database's clock moves...
    machine.trip = 2.0  # ...but this answer is too slow to say by how much, within a second
    await clock.sync()
    assert clock.offset == pytest.approx(600.0)
    machine.trip = 0.02
    await clock.sync()
    assert clock.offset == pytest.approx(605.0)


async def test_a_slow_answer_is_used_while_no_measure_is_known():
    machine = Machine(local=1_000.0, database=1_600.0, trip=3.0)
    clock = machine.clock()
    await clock.sync()
    assert clock.offset == pytest.approx(600.0)


def warning(off: str, side: str) -> tuple[str, str]:
    return ("WARNING", f"This machine's clock and the database server's are {off} s apart (this machine's {side})."
                       " The bot times leases, timeouts and jobs by the database's clock; keep every machine's clock"
                       " and the database server's synchronized (NTP)")


async def test_the_operator_is_told_of_an_offset_once_again_when_it_moves_and_when_it_is_gone(caplog):
    caplog.set_level(logging.INFO, logger="bot.dispatch.clock")
    machine = Machine(local=1_000.0, database=1_600.0)
    clock = machine.clock()
    await clock.sync()
    await clock.sync()
    machine.database -= 0.5  # moved by less than a second: nothing more to say
    await clock.sync()
    machine.local += 1200  # now ahead
    await clock.sync()
    machine.local -= 600.3  # NTP sets it right
    await clock.sync()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        warning("600.0", "behind"),
        warning("600.5", "ahead"),
        ("INFO", "This machine's clock is back in step with the database server's (0.200 s apart)"),
    ]


async def test_an_offset_told_comes_back_told_again_even_after_a_small_one(caplog):
    """Back to under a second (but not half of one) from far: in step; far again: told again."""
    caplog.set_level(logging.INFO, logger="bot.dispatch.clock")
    machine = Machine(local=1_000.0, database=1_600.0)
    clock = machine.clock()
    await clock.sync()
    machine.local += 599.3
    await clock.sync()
    machine.local -= 599.7
    await clock.sync()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        warning("600.0", "behind"),
        ("INFO", "This machine's clock is back in step with the database server's (0.700 s apart)"),
        warning("600.4", "behind"),
    ]
    caplog.clear()
    machine.local += 599.7  # 0.7 s apart: in step again (far from the 600.4 told)
    await clock.sync()
    machine.database += 0.6  # 1.3 s apart: told, as nothing is told now
    await clock.sync()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "This machine's clock is back in step with the database server's",
        "This machine's clock and the database server's are 1.3 s apart"]


async def test_a_database_that_does_not_answer_keeps_the_last_measure_and_is_told_once(caplog):
    caplog.set_level(logging.INFO, logger="bot.dispatch.clock")
    machine = Machine(local=1_000.0, database=1_600.0)
    clock = machine.clock()
    await clock.sync()
    machine.down = True
    machine.database += 30
    assert [await clock.sync() for _ in range(3)] == [False, False, False]
    assert clock.offset == pytest.approx(600.0)
    machine.down = False
    assert await clock.sync() and clock.offset == pytest.approx(630.0)
    machine.down = True
    assert not await clock.sync()
    told = [(r.levelname, r.getMessage()) for r in caplog.records]
    failed = ("WARNING", "Could not read the database's clock (ConnectionResetError); leases and timeouts keep the"
                         " offset measured before (600.0 s)")
    assert told == [warning("600.0", "behind"), failed, warning("630.0", "behind"),
                    (failed[0], failed[1].replace("600.0", "630.0"))]


async def test_each_engine_tells_its_clock(any_database):
    """SQLite's is this machine's (every process on the file runs here); PostgreSQL's is its server's,
    read as the statement runs (here on this machine, so the two agree)."""
    import time

    before = time.time()
    told = [await any_database.clock() for _ in range(2)]
    assert before - 1 <= told[0] <= told[1] <= time.time() + 1


async def test_a_lease_is_renewed_when_the_clock_cannot_be_read(any_database):
    """The clock's query failing alone does not cost the process its lease (the last offset stays)."""
    import random

    from bot.dispatch.dispatcher import Dispatcher
    from tests.dispatch_support import ManualBackend, jobs_of

    async def unreadable() -> float:
        raise TimeoutError

    clock = SharedClock(unreadable)
    jobs = jobs_of(any_database)
    dispatcher = Dispatcher(jobs, any_database.stores(None).accounts, ManualBackend(), clock=clock,
                            clock_sync=clock.sync, owner="here:ns:1:aaaa", rng=random.Random(1))
    await dispatcher.start()
    try:
        assert await jobs.live_owners(now=clock(), ttl=30) == ["here:ns:1:aaaa"]
    finally:
        await dispatcher.close()
