"""The polled path's memo, for every adapter: a job decoded once per exact row.

GET /jobs/?jobid= is polled again and again while a row does not change. The Job decoded from a row
(with its account's masked-token digits) is kept for that exact row, every column of it, so it is
right whatever the clock (two writes within one tick change other columns). Least recently used
rows go first past ``limit``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from bot.dispatch.models import Job, job_from_row

DECODED_ROWS = 1024


class DecodedJobs:
    def __init__(self, limit: int = DECODED_ROWS) -> None:
        self._limit = limit
        self._rows: OrderedDict[tuple, tuple[Job, str | None]] = OrderedDict()

    def of(self, row: Any) -> tuple[Job, str | None]:
        """The job of a ``jobs`` row joined with ``account_token_last4``, decoded at most once."""
        key = tuple(row)
        found = self._rows.get(key)
        if found is not None:
            self._rows.move_to_end(key)
            return found
        found = self._rows[key] = (job_from_row(row), row["account_token_last4"])
        if len(self._rows) > self._limit:
            self._rows.popitem(last=False)
        return found
