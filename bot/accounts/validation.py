"""The seed's validation rules for ``POST /pixverse/account/<channel>``, in the seed's order.

Pure: no I/O, no Discord. The slash command and the HTTP API call :func:`validate_account`
with the raw values they received, so both interfaces answer the same texts in the same
order. Rules that need storage (rule 8) or the network (the token check) follow in
:mod:`bot.accounts.service`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.accounts.crypto import mask_token_shapes
from bot.errors import bad_request

SNOWFLAKE = re.compile(r"[0-9]{17,20}")
ECHO_LIMIT = 100


@dataclass(frozen=True)
class AccountRequest:
    """A request that passed rules 1–7 and the extra shape rules; the token is kept out of repr."""

    discord: str = field(repr=False)
    server: str
    channel: str
    max_jobs: int


def echo(value: Any) -> str:
    """A user-given value as error texts show it: as given, cut to 100 characters, except that
    anything shaped like a Discord token (pasted into the wrong field) shows only its last 4."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, list, dict)) or value is None:  # as a JSON client wrote it: true, [3], {"a": 1}
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:  # numbers: their own spelling, which is JSON's (JSON's 1e400 arrives as inf)
        text = str(value)
    return mask_token_shapes(text)[:ECHO_LIMIT]


def is_snowflake(value: str) -> bool:
    return SNOWFLAKE.fullmatch(value) is not None


def _text(body: Mapping[str, Any], name: str) -> str | None:
    """The trimmed string value of a param, None when missing or blank."""
    value = body.get(name)
    if value is None or isinstance(value, bool):
        # JSON false/true is not a value a person would call "given".
        return None if value is None else _wrong_type(name)
    if isinstance(value, int):
        # Ids sent as JSON numbers are accepted as their digits.
        value = str(value)
    if not isinstance(value, str):
        _wrong_type(name)
    value = value.strip()
    return value or None


def _wrong_type(name: str):
    raise bad_request(f"Required param {name} must be a string")


# Numbers written as text: ASCII decimal notation only. float() alone would also take
# "1_0", "１" or "٣", which nobody means as a maxJobs.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Stands for a number too large to convert (over Python's 4,300 digits, or 1e400): it is
# beyond any limit, and the error shows the number as written (JSON's 1e400 arrives as inf, shown so).
_BEYOND_ANY_LIMIT = 10**30


def _max_jobs(value: Any) -> tuple[Any, str | None]:
    """maxJobs as a number when it is one (int, float, numeric text), else as given; with the
    text error messages show for it when that is not the number's own."""
    if isinstance(value, bool) or not isinstance(value, (str, float)):
        return value, None
    if isinstance(value, float):
        if math.isinf(value):  # JSON's 1e400
            return (-1 if value < 0 else 1) * _BEYOND_ANY_LIMIT, str(value)
        return value, None
    text = value.strip()
    negative = text.startswith("-")
    if _INTEGER_TEXT.fullmatch(text):
        # Leading zeros count towards int()'s digit limit: drop them first.
        digits = text.lstrip("+-").lstrip("0") or "0"
        sign = -1 if negative else 1
        try:
            return sign * int(digits), None
        except ValueError:  # more digits than int() converts
            return sign * _BEYOND_ANY_LIMIT, ("-" if negative else "") + digits
    if _DECIMAL_TEXT.fullmatch(text):
        number = float(text)
        if math.isinf(number):
            return (-1 if negative else 1) * _BEYOND_ANY_LIMIT, text
        return number, None
    return value, None


def validate_account(
    body: Mapping[str, Any],
    *,
    path_channel: str,
    guild_id: str,
    max_concurrent_jobs: int,
) -> AccountRequest:
    """Checks a create/update request; raises :class:`ApiError` with the first rule it breaks.

    ``path_channel`` is the channel of the URL path (for the slash command: the channel it
    was run in); ``guild_id`` the server the request acts for.
    """
    discord = _text(body, "discord")
    if discord is None:
        raise bad_request("Required param discord is missing or empty")
    server = _text(body, "server")
    if server is None:
        raise bad_request("Required param server is missing or empty")
    channel = _text(body, "channel")
    if channel is None:
        raise bad_request("Required param channel is missing or empty")
    if not is_snowflake(channel):
        raise bad_request(f"Required param channel ({echo(channel)}) is not valid Discord channel id")
    if channel != path_channel:
        raise bad_request(
            f"Required param channel ({echo(channel)}) not matching to /pixverse/account/{echo(path_channel)}"
        )

    raw_max_jobs = body.get("maxJobs")
    if raw_max_jobs is None or (isinstance(raw_max_jobs, str) and not raw_max_jobs.strip()):
        raise bad_request("Required param maxJobs is missing or empty")
    max_jobs, shown = _max_jobs(raw_max_jobs)
    is_number = isinstance(max_jobs, (int, float)) and not isinstance(max_jobs, bool)
    if is_number and shown is None:
        shown = _number_text(max_jobs)
    if is_number and max_jobs > max_concurrent_jobs:
        raise bad_request(f"Required param maxJobs {echo(shown)} can't be more that {max_concurrent_jobs}")
    # Beyond the seed, in its style: the rest of "between 1 and maxConcurrentJobs".
    if not is_number or (isinstance(max_jobs, float) and not max_jobs.is_integer()):
        raise bad_request(f"Required param maxJobs ({echo(raw_max_jobs)}) is not an integer")
    if max_jobs < 1:
        raise bad_request(f"Required param maxJobs {echo(shown)} can't be less than 1")
    if not is_snowflake(server):
        raise bad_request(f"Required param server ({echo(server)}) is not valid Discord server id")
    if server != guild_id:
        raise bad_request(
            f"Required param server ({echo(server)}) not matching to this Discord server ({guild_id})"
        )
    return AccountRequest(discord=discord, server=server, channel=channel, max_jobs=int(max_jobs))


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


# The channel of a GET/DELETE path: the same snowflake rule, the same text as rule 4.
def validate_channel_param(channel: Any) -> str:
    text = _text({"channel": channel}, "channel")
    if text is None:
        raise bad_request("Required param channel is missing or empty")
    if not is_snowflake(text):
        raise bad_request(f"Required param channel ({echo(text)}) is not valid Discord channel id")
    return text

