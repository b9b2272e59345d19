"""The time that every process sharing the database agrees on.

A lease, a job's times and its timeout are written by one process and compared by another, perhaps
on another machine. A machine's clock can be off: no NTP, a virtual machine resumed, a host set by
hand. A process whose clock is behind by more than ``LEASE_EXPIRY_SECONDS`` writes leases that the
others read as expired, so they take over its jobs while it runs them; one ahead times jobs out
early. So the dispatcher takes its time from a ``SharedClock``: this machine's clock plus its offset
from the database's, measured on every lease renewal by one query, from the middle of its round trip.
On one SQLite file every process already shares the machine's clock, and the offset stays about 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# An offset this large is told to the operator (once, and again when it moves by as much).
WARN_OFFSET_SECONDS = 1.0
# A measure whose round trip took longer is imprecise by half of it: used only while none is known.
MAX_ROUND_TRIP_SECONDS = 0.5


class SharedClock:
    """Seconds since the Unix epoch by the database's clock, read without a query: ``clock()``.
    ``sync()`` measures the offset again."""

    def __init__(self, source: Callable[[], Awaitable[float]], *, local: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._source = source  # the database's clock (Database.clock)
        self.local = local  # this machine's
        self.monotonic = monotonic  # times the round trip, whatever the local clock does meanwhile
        self.offset = 0.0  # the database's clock minus this machine's, seconds
        self._measured = False
        self._told: float | None = None  # the offset last warned of; None: in step
        self._failing = False  # the last sync's query failed (told once)

    def __call__(self) -> float:
        return self.local() + self.offset

    async def sync(self) -> bool:
        """Measures the offset again. False when the database did not answer: the last measure stays
        (told once until one succeeds); the lease renewal after it goes on."""
        sent, began = self.local(), self.monotonic()
        try:
            theirs = await self._source()
        except Exception as exc:
            if not self._failing:
                self._failing = True
                log.warning("Could not read the database's clock (%s); leases and timeouts keep the offset"
                            " measured before (%.1f s)", type(exc).__name__, self.offset)
            return False
        self._failing = False
        trip = self.monotonic() - began
        if trip > MAX_ROUND_TRIP_SECONDS and self._measured:
            return True
        self.offset, self._measured = theirs - (sent + trip / 2), True
        self._tell()
        return True

    def _tell(self) -> None:
        off = abs(self.offset)
        if off >= WARN_OFFSET_SECONDS and (self._told is None or abs(self.offset - self._told) >= WARN_OFFSET_SECONDS):
            self._told = self.offset
            log.warning(
                "This machine's clock and the database server's are %.1f s apart (this machine's %s). The bot"
                " times leases, timeouts and jobs by the database's clock; keep every machine's clock and the"
                " database server's synchronized (NTP)",
                off, "behind" if self.offset > 0 else "ahead",
            )
        elif self._told is not None and (off < WARN_OFFSET_SECONDS / 2 or (
                off < WARN_OFFSET_SECONDS and abs(self.offset - self._told) >= WARN_OFFSET_SECONDS)):
            self._told = None
            log.info("This machine's clock is back in step with the database server's (%.3f s apart)", off)
