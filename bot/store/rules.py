"""Placement's rules, in one place for every adapter: which answer a new job or a button gets.

An adapter reads, under its capacity guard, the server's accounts with their load (``channel_id``,
``in_rotation``, ``max_jobs``, ``executing``, ``error``) and the number of jobs waiting; these
functions decide. They raise the refusal a user hears (404, 503, 409, 429) and ask the adapter
for the executing job ids only when a 429 needs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from bot.errors import ApiError
from bot.store import BUSY, NO_ACCOUNTS, NONE_IN_ROTATION, busy

Row = Mapping[str, Any]
ExecutingIds = Callable[[], Awaitable[list[str]]]


def free_accounts(accounts: Sequence[Row]) -> list[Row]:
    """The accounts in rotation with a free slot."""
    return [row for row in accounts if row["in_rotation"] and row["executing"] < row["max_jobs"]]


async def new_job(accounts: Sequence[Row], waiting: int, *, queue_size: int,
                  executing_ids: ExecutingIds) -> list[Row]:
    """Raises the refusal a new job of the server gets as things stand: 404 (no account), 503
    (none in rotation), 429 (all busy and no queue room). Otherwise returns the free accounts:
    the job takes one of them when they exist and nobody waits, else it queues."""
    if not accounts:
        raise ApiError(404, NO_ACCOUNTS)
    if not any(row["in_rotation"] for row in accounts):
        raise ApiError(503, NONE_IN_ROTATION)
    free = free_accounts(accounts)
    if (free and not waiting) or waiting < queue_size:
        return free
    raise busy(BUSY, await executing_ids())


async def button(account: Row | None, account_channel_id: str, *, executing_ids: ExecutingIds) -> Row:
    """Raises the refusal a button on this account gets as things stand (404, 409, 429);
    otherwise returns the account, which has a free slot (only it can press its own buttons)."""
    if account is None:
        raise ApiError(404, f"The PixVerse account of channel {account_channel_id} that made this job is no longer configured")
    if not account["in_rotation"]:
        reason = f": {account['error']}" if account["error"] else ""
        raise ApiError(409, f"The PixVerse account of channel {account_channel_id} is out of rotation{reason}")
    if account["executing"] >= account["max_jobs"]:
        raise busy(f"The PixVerse account of channel {account_channel_id} is busy", await executing_ids())
    return account
