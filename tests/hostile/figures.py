"""What the hostile-input suite measured, printed at the end of the run (tests/conftest.py).

Each attack adds one row: how many requests it sent, how many were answered 5xx or not as
JSON, acknowledged writes lost, and what it grew. The tests assert the limits; these rows
are the figures a reader of the CI log sees without digging.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field


@dataclass
class Row:
    attack: str
    requests: int = 0
    server_errors: int = 0  # 5xx, timeouts, dropped connections
    not_json: int = 0
    writes_lost: int | None = None
    rss_growth_mb: float | None = None
    notes: list[str] = field(default_factory=list)


ROWS: list[Row] = []


def record(row: Row) -> None:
    ROWS.append(row)


def rss_mb() -> float:
    """This process's resident memory now, from /proc (MiB)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def table() -> list[str]:
    if not ROWS:
        return []
    lines = [f"{'attack':<58} {'requests':>8} {'5xx':>5} {'not JSON':>8} {'writes lost':>11} {'RSS +MB':>8}"]
    for row in ROWS:
        lost = "-" if row.writes_lost is None else str(row.writes_lost)
        rss = "-" if row.rss_growth_mb is None else f"{row.rss_growth_mb:.1f}"
        lines.append(f"{row.attack:<58} {row.requests:>8,} {row.server_errors:>5} {row.not_json:>8} {lost:>11} {rss:>8}")
        lines.extend(f"    {note}" for note in row.notes)
    total = sum(row.requests for row in ROWS)
    lines.append(f"{'total':<58} {total:>8,} {sum(r.server_errors for r in ROWS):>5} {sum(r.not_json for r in ROWS):>8}")
    lines.append("rerun: python -m pytest tests/hostile tests/e2e/test_http_fuzz.py")
    return lines
