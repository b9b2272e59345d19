"""Request rules for jobs, in the seed's style: pure, shared by the slash commands and HTTP."""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Any

from bot.accounts.validation import echo
from bot.addresses import client_host, host_verdict
from bot.dispatch.models import Verb
from bot.errors import bad_request

PROMPT_LIMIT = 512
CHARACTER_LIMIT = 100
SEED_MAX = 2_147_483_647
STYLES = ("Realistic", "Anime", "3D Animation")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
BUTTONS = ("U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", "🔀")
JOB_ID = re.compile(r"[A-Za-z0-9_:\-]{1,100}")
REPLY_LIMIT = 1024


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"Param {name} must be a string")
    return value.strip() or None


def _required_text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"Required param {name} must be a string")
    if value is None or not value.strip():
        raise bad_request(f"Required param {name} is missing or empty")
    return value.strip()


def validate_create(body: Mapping[str, Any], verb: Verb) -> dict[str, Any]:
    """The parameters of ``create`` / ``create_single``, checked; raises ApiError 400."""
    prompt = _required_text(body, "prompt")
    if len(prompt) > PROMPT_LIMIT:
        raise bad_request(f"Required param prompt is longer than {PROMPT_LIMIT} characters")
    style = _required_text(body, "style")
    if style not in STYLES:
        raise bad_request(f"Required param style ({echo(style)}) is not one of {', '.join(STYLES)}")
    params: dict[str, Any] = {"prompt": prompt, "style": style}

    aspect_ratio = _optional_text(body, "aspect_ratio")
    if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
        raise bad_request(f"Param aspect_ratio ({echo(aspect_ratio)}) is not one of {', '.join(ASPECT_RATIOS)}")
    negative_prompt = _optional_text(body, "negative_prompt")
    if negative_prompt is not None and len(negative_prompt) > PROMPT_LIMIT:
        raise bad_request(f"Param negative_prompt is longer than {PROMPT_LIMIT} characters")
    character = _optional_text(body, "character")
    if character is not None:
        if len(character) > CHARACTER_LIMIT:
            raise bad_request(f"Param character is longer than {CHARACTER_LIMIT} characters")
        if style != "Anime":
            raise bad_request(f"Param character is supported only with style Anime, not {style}")
    for name, value in (("aspect_ratio", aspect_ratio), ("negative_prompt", negative_prompt), ("character", character)):
        if value is not None:
            params[name] = value

    if verb is Verb.CREATE_SINGLE and body.get("seed") is not None:
        seed = body["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise bad_request(f"Param seed ({echo(seed)}) must be an integer from 0 to {SEED_MAX}")
        params["seed"] = seed
    elif verb is Verb.CREATE and body.get("seed") is not None:
        raise bad_request("Param seed is supported only by create_single")
    return params


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
