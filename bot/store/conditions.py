"""SQL conditions that read the same on every engine, for the adapters' queries."""

from __future__ import annotations

from bot.dispatch.models import API_REQUESTER


def asked_through(api: bool | None) -> str:
    """Keeps the jobs asked for through the HTTP API (True) or in Discord (False); None: both."""
    if api is None:
        return ""
    return f" AND request_channel_id {'=' if api else '<>'} '{API_REQUESTER}'"
