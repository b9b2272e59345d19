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
from collections.abc import Iterable

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
# Shapes of Discord tokens: base64 user id . timestamp . hmac, and legacy mfa tokens.
_TOKEN_SHAPE = re.compile(r"\b(?:[\w-]{20,30}\.[\w-]{6,7}\.[\w-]{25,}|mfa\.[\w-]{20,})")

# Registered secrets shorter than this are left to the structural rules: masking "abc"
# everywhere would garble logs and reveal more than it hides.
_MIN_REGISTERED = 8
# Account tokens seen at run time are remembered up to this many (oldest forgotten first),
# so an admin pasting junk in a loop cannot grow the pattern without bound. Pinned
# secrets (the bot token, the key) are never forgotten.
_MAX_RECENT = 1024
_MAX_SECRET_LENGTH = 512


class SecretRedactor:
    """Masks registered secret values and anything shaped like a token."""

    def __init__(self) -> None:
        self._pinned: set[str] = set()
        self._recent: dict[str, None] = {}  # insertion-ordered
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, *secrets: str | None, pinned: bool = False) -> None:
        wanted = [s for s in secrets if s and _MIN_REGISTERED <= len(s) <= _MAX_SECRET_LENGTH]
        with self._lock:
            added = [s for s in wanted if s not in self._pinned and s not in self._recent]
            if not added:
                return
            for secret in added:
                if pinned:
                    self._pinned.add(secret)
                else:
                    self._recent[secret] = None
            while len(self._recent) > _MAX_RECENT:
                del self._recent[next(iter(self._recent))]
            self._pattern = None  # rebuilt by the next redact()

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and (self._pinned or self._recent):
                # Longest first, so a secret that contains another is masked whole.
                ordered = sorted(self._pinned | self._recent.keys(), key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            return self._pattern

    def redact(self, text: str) -> str:
        pattern = self._compiled()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _INNER_OBJECT.sub(self._mask_discord_option, text)
        text = _SECRET_KEY.sub(lambda m: f"{m.group(1)}'{MASK}'", text)
        return _TOKEN_SHAPE.sub(MASK, text)

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
