"""Jobs inserted in bulk, not through placement: for benchmarks and test fixtures only.

One column list and one set of defaults, so that a schema change is made here and nowhere
else. Every row must still satisfy the schema's CHECKs (a job holding a slot has its
account; a waiting job has none; ...) and its owner, if any, must hold a lease: see
:func:`lease`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.store.sqlite.database import Tx
from bot.store.sqlite.jobs import LEASE

JOB_DEFAULTS: dict[str, Any] = {
    "job_id": None,  # required
    "guild_id": None,  # required
    "state": "done",
    "version": 1,
    "status": "completed",
    "account_channel_id": None,
    "account_user_id": None,
    "max_jobs": None,
    "requester_id": "900000000000000001",
    "request_channel_id": "900000000000000002",
    "verb": "create",
    "params": '{"prompt": "a red fox"}',
    "parent_job_id": None,
    "owner": None,
    "placement_attempts": 0,
    "created_at": 0.0,
    "updated_at": None,  # created_at when not given
    "submitted_at": None,
    "pixverse_open": 0,
    "message_id": None,
    "progress": None,
    "content": None,
    "status_message_id": None,
    "status_message_in_channel": 0,
    "final_pending": 0,  # an ended job's end shown (history); 1: still to show (only when ended)
}

INSERT_JOBS = (
    f"INSERT INTO jobs ({', '.join(JOB_DEFAULTS)}) VALUES ({', '.join(':' + column for column in JOB_DEFAULTS)})"
)


def job_row(**values: Any) -> dict[str, Any]:
    unknown = set(values) - set(JOB_DEFAULTS)
    if unknown:
        raise ValueError(f"not a jobs column: {sorted(unknown)}")
    row = {**JOB_DEFAULTS, **values}
    if row["updated_at"] is None:
        row["updated_at"] = row["created_at"]
    return row


def job_rows(rows: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    return (job_row(**row) for row in rows)


async def insert_jobs(tx: Tx, rows: Iterable[Mapping[str, Any]]) -> None:
    await tx.executemany(INSERT_JOBS, job_rows(rows))


async def lease(tx: Tx, owner: str, heartbeat_at: float) -> None:
    """The process lease a job's owner must hold (a foreign key)."""
    await tx.execute(LEASE, (owner, heartbeat_at, None))
