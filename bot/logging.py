"""Logging setup with secret redaction applied to every record, whatever handler shows it.

A Discord user token is a full-access credential. discord.py at DEBUG logs whole gateway
payloads (slash-command options included) and aiosqlite logs query parameters, so masking
at our own call sites is not enough: redaction happens when a record is created, which
covers every logger, every handler (pytest's capture included) and formatted tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable

from bot.accounts.crypto import TOKEN_SHAPE

MASK = "[redacted]"

# A string literal in Python repr or JSON, escapes included, so a value with quotes or
# braces inside cannot end the match early.
_STRING = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
# An innermost dict/object, quote-aware: an application-command option such as
# {'type': 3, 'name': 'discord', 'value': '...'}.
_INNER_OBJECT = re.compile(r"\{(?:[^{}'\"]|" + _STRING + r")*\}")
_NAMED_DISCORD = re.compile(r"""['"]name['"]\s*:\s*['"]discord['"]""")
_VALUE = re.compile(r"""(['"]value['"]\s*:\s*)""" + _STRING)
# Secret-bearing keys in bodies and headers: {"discord": "..."} or 'Authorization': '...'.
_SECRET_KEY = re.compile(
    r"""((['"])(?:discord|token|authorization|discord_token|token_encryption_key)\2\s*:\s*)""" + _STRING,
    re.IGNORECASE,
)
# Interaction and webhook tokens travel in URL paths: /interactions/<id>/<token>/callback,
# /webhooks/<application id>/<token>/messages/@original. Each is a credential to answer as the
# bot for 15 minutes, so the path segment is masked wherever such a URL is logged.
_URL_TOKEN = re.compile(r"(/(?:interactions|webhooks)/[0-9]{1,20}/)[A-Za-z0-9_.\-]+")
# Everything the bot registers is token-shaped text (Discord tokens, Fernet keys, API tokens):
# one fixed pattern finds the candidates in a record, and each is looked up in a set. The cost
# of a record is linear in its length, whatever the number of secrets.
_CANDIDATE = re.compile(r"[A-Za-z0-9_.\-]{8,}={0,2}")

# Registered secrets shorter than this are left to the structural rules: masking "abc"
# everywhere would garble logs and reveal more than it hides.
_MIN_REGISTERED = 8
# Account and API tokens seen at run time are remembered up to this many (least recently
# registered forgotten first); pinned secrets (the bot token, the key) are never forgotten.
_MAX_RECENT = 10_000
_MAX_SECRET_LENGTH = 512
# A pinned secret that is not token-shaped (a bot token pasted with odd characters) is matched
# by plain substring search; there are at most this many, so the cost stays bounded.
_MAX_ODD_PINNED = 8


class SecretRedactor:
    """Masks registered secret values, anything shaped like a token, and tokens in Discord URLs.

    Only real secrets are registered: the bot token and the token key (pinned), stored account
    tokens when decrypted, an account token once Discord has accepted it, API tokens when
    shown. Arbitrary input never is, so a client cannot grow the set or the cost of a record.
    """

    def __init__(self) -> None:
        self._pinned: set[str] = set()
        self._odd_pinned: list[str] = []
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pinned) + len(self._odd_pinned) + len(self._recent)

    def register(self, *secrets: str | None, pinned: bool = False) -> None:
        wanted = [s for s in secrets if s and _MIN_REGISTERED <= len(s) <= _MAX_SECRET_LENGTH]
        with self._lock:
            for secret in wanted:
                if not _CANDIDATE.fullmatch(secret) or len(secret.strip(".").rstrip("=")) < _MIN_REGISTERED:
                    if pinned and secret not in self._odd_pinned and len(self._odd_pinned) < _MAX_ODD_PINNED:
                        self._odd_pinned.append(secret)
                    continue  # not token-shaped: the structural rules still apply
                secret = secret.strip(".").rstrip("=")
                if pinned:
                    self._pinned.add(secret)
                    self._recent.pop(secret, None)
                elif secret not in self._pinned:
                    self._recent[secret] = None
                    self._recent.move_to_end(secret)
            while len(self._recent) > _MAX_RECENT:
                self._recent.popitem(last=False)

    def _mask_candidate(self, match: re.Match[str]) -> str:
        text = match.group(0)
        # Secrets are kept without base64 padding, and a candidate is looked up without the
        # sentence punctuation or padding around it: "key=<secret>." or a key printed unpadded.
        core = text.strip(".").rstrip("=")
        if core in self._pinned or core in self._recent:
            return text.replace(core, MASK, 1)
        return text

    def redact(self, text: str) -> str:
        if self._pinned or self._recent:
            text = _CANDIDATE.sub(self._mask_candidate, text)
        for secret in self._odd_pinned:
            text = text.replace(secret, MASK)
        text = _URL_TOKEN.sub(lambda m: m.group(1) + MASK, text)
        text = _INNER_OBJECT.sub(self._mask_discord_option, text)
        text = _SECRET_KEY.sub(lambda m: f"{m.group(1)}'{MASK}'", text)
        return TOKEN_SHAPE.sub(MASK, text)

    @staticmethod
    def _mask_discord_option(match: re.Match[str]) -> str:
        obj = match.group(0)
        if not _NAMED_DISCORD.search(obj):
            return obj
        return _VALUE.sub(lambda m: f"{m.group(1)}'{MASK}'", obj)


redactor = SecretRedactor()


def register_secrets(*secrets: str | None, pinned: bool = False) -> None:
    """Adds values that must never be logged; ``pinned`` for the bot token and keys."""
    redactor.register(*secrets, pinned=pinned)


_installed = False


def install_redaction() -> None:
    """Wraps the log record factory once so that every record is redacted at creation."""
    global _installed
    if _installed:
        return
    base_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base_factory(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record
        message = f"{record.msg!r} % {record.args!r}"
    record.msg = redactor.redact(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None:
        # Pre-render the traceback: Formatter uses exc_text when it is set.
        record.exc_text = redactor.redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redactor.redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Second line of defence on the handler: records built without the record factory
    (logging.makeLogRecord, as queue and socket listeners do) are redacted here."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def setup_logging(level: str = "INFO", *, stream=None, secrets: Iterable[str | None] = ()) -> None:
    install_redaction()
    register_secrets(*secrets, pinned=True)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    # aiosqlite's DEBUG lines are every statement with its parameters: noise at best.
    logging.getLogger("aiosqlite").setLevel(max(numeric, logging.INFO))
    # discord.http at DEBUG echoes request bodies; keep it but redacted (above). The
    # gateway's per-event DEBUG dump is the main leak the redactor exists for.
