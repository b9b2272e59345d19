"""Request rules for jobs, in the seed's style: pure, shared by the slash commands and HTTP."""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Any

from bot.accounts.validation import echo
from bot.addresses import client_host, host_verdict
from bot.dispatch.catalogue import BUTTONS, refuse_unstorable
from bot.errors import bad_request

# The PixVerse commands' own rules live in bot/dispatch/catalogue.py.
JOB_ID = re.compile(r"[A-Za-z0-9_:\-]{1,100}")
REPLY_LIMIT = 1024


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"Param {name} must be a string")
    refuse_unstorable(f"Param {name}", value)
    return value.strip() or None


def validate_job_id(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise bad_request("Required param jobid must be a string")
    if value is None or not value.strip():
        raise bad_request("Required param jobid is missing or empty")
    job_id = value.strip()
    if not JOB_ID.fullmatch(job_id):
        raise bad_request(f"Required param jobid ({echo(job_id)}) is not a valid job id")
    return job_id


def validate_button(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise bad_request("Required param button must be a string")
    if value is None or not value.strip():
        raise bad_request("Required param button is missing or empty")
    button = value.strip()
    if button not in BUTTONS:
        raise bad_request(f"Required param button ({echo(button)}) is not one of {', '.join(BUTTONS)}")
    return button


def validate_reply(body: Mapping[str, Any], *, allow_private: bool = False) -> dict[str, str]:
    """The optional replyUrl/replyRef of the HTTP API: where to POST the finished job."""
    reply: dict[str, str] = {}
    url = _optional_text(body, "replyUrl")
    if url is not None:
        if len(url) > REPLY_LIMIT:
            raise bad_request(f"Param replyUrl is longer than {REPLY_LIMIT} characters")
        try:
            parsed = urlsplit(url)  # raises on an unbalanced [ or ]
            scheme = parsed.scheme
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError:
            scheme = None
        # The host as the HTTP client will connect to it, not as the text spells it.
        host = client_host(url) if scheme else None
        if scheme not in ("http", "https") or not host:
            raise bad_request(f"Param replyUrl ({echo(url)}) is not an http(s) URL")
        if not allow_private and host_verdict(host) is False:
            # The bot must not be made to POST into its own host or network.
            raise bad_request(f"Param replyUrl ({echo(url)}) points to a private or local address")
        reply["replyUrl"] = url
    ref = _optional_text(body, "replyRef")
    if ref is not None:
        if len(ref) > REPLY_LIMIT:
            raise bad_request(f"Param replyRef is longer than {REPLY_LIMIT} characters")
        reply["replyRef"] = ref
    return reply
