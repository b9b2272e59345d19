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
# An application-command option named discord, in either key order, with only plain fields
# (type, focused …) between its name and its value: {'type': 3, 'name': 'discord', 'value': '…'}.
# Each match starts at a literal key, so a record costs one pass, however many braces and
# quotes it holds (an innermost-object pattern re-scanned from every "{": quadratic).
_PLAIN = r"""(?:-?\d+|true|false|True|False|None|null|""" + _STRING + r")"
_BETWEEN = r"""(?:\s*,\s*['"]\w+['"]\s*:\s*""" + _PLAIN + r")*?"
_NAME_IS_DISCORD = r"""['"]name['"]\s*:\s*['"]discord['"]"""
_VALUE_KEY = r"""['"]value['"]\s*:\s*"""
_DISCORD_OPTION_NAME_FIRST = re.compile("(" + _NAME_IS_DISCORD + _BETWEEN + r"\s*,\s*" + _VALUE_KEY + ")" + _STRING)
_DISCORD_OPTION_VALUE_FIRST = re.compile("(" + _VALUE_KEY + ")" + _STRING + "(" + _BETWEEN + r"\s*,\s*" + _NAME_IS_DISCORD + ")")
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
# Where in a candidate a secret may start: at once, or past up to ten characters glued to it
# (\n in a repr, %3D in a URL, \u0000, "Bearer-"): at most 22 dict lookups per candidate.
_OFFSETS = tuple(range(11))
_SHORT_KEY = _MIN_REGISTERED
_LONG_KEY = 16


class SecretRedactor:
    """Masks registered secret values, anything shaped like a token, and tokens in Discord URLs.

    Only real secrets are registered: the bot token and the token key (pinned), stored account
    tokens when decrypted, an account token once Discord has accepted it, API tokens when
    shown. Arbitrary input never is, so a client cannot grow the set or the cost of a record.

    Each candidate run of token characters is looked up by the prefix found at its first eleven
    offsets, so a secret glued after an escape (``\\n`` in a repr, ``%3D`` in a URL) or a short
    word, or followed by more characters, is masked too.
    """

    def __init__(self) -> None:
        self._pinned: set[str] = set()
        self._odd_pinned: list[str] = []
        self._recent: OrderedDict[str, None] = OrderedDict()
        # prefix -> secrets that start with it: _LONG_KEY characters for long secrets, _SHORT_KEY
        # for the rest, so that tokens sharing a prefix (ids made the same day) rarely collide.
        self._by_prefix: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pinned) + len(self._odd_pinned) + len(self._recent)

    @staticmethod
    def _key(secret: str) -> str:
        return secret[:_LONG_KEY] if len(secret) >= _LONG_KEY else secret[:_SHORT_KEY]

    def _index(self, secret: str) -> None:
        self._by_prefix.setdefault(self._key(secret), set()).add(secret)

    def _unindex(self, secret: str) -> None:
        key = self._key(secret)
        bucket = self._by_prefix.get(key)
        if bucket is not None:
            bucket.discard(secret)
            if not bucket:
                del self._by_prefix[key]

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
                    self._index(secret)
                elif secret not in self._pinned:
                    self._recent[secret] = None
                    self._recent.move_to_end(secret)
                    self._index(secret)
            while len(self._recent) > _MAX_RECENT:
                forgotten, _ = self._recent.popitem(last=False)
                self._unindex(forgotten)

    def _mask_candidate(self, match: re.Match[str]) -> str:
        text = match.group(0)
        by_prefix = self._by_prefix
        for offset in _OFFSETS:
            if offset + _SHORT_KEY > len(text):
                break
            for key_length in (_LONG_KEY, _SHORT_KEY):
                bucket = by_prefix.get(text[offset:offset + key_length])
                if bucket:
                    for secret in bucket:
                        if text.startswith(secret, offset):
                            return text[:offset] + MASK + text[offset + len(secret):]
        return text

    def redact(self, text: str) -> str:
        if self._pinned or self._recent:
            text = _CANDIDATE.sub(self._mask_candidate, text)
        for secret in self._odd_pinned:
            text = text.replace(secret, MASK)
        text = _URL_TOKEN.sub(lambda m: m.group(1) + MASK, text)
        if "discord" in text:
            text = _DISCORD_OPTION_NAME_FIRST.sub(lambda m: f"{m.group(1)}'{MASK}'", text)
            text = _DISCORD_OPTION_VALUE_FIRST.sub(lambda m: f"{m.group(1)}'{MASK}'{m.group(2)}", text)
        text = _SECRET_KEY.sub(lambda m: f"{m.group(1)}'{MASK}'", text)
        return TOKEN_SHAPE.sub(MASK, text)


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


# A LogRecord's own attributes: anything else on a record came through ``extra``.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _redact_extra(record: logging.LogRecord) -> None:
    """Texts passed through ``extra`` (an event's fields): set on the record after the factory ran,
    so redacted here, on the handler, before a JSON formatter writes them as keys."""
    for key, value in list(record.__dict__.items()):
        if key in _RECORD_ATTRIBUTES:
            continue
        if isinstance(value, str):
            record.__dict__[key] = redactor.redact(value)
        elif isinstance(value, dict):
            record.__dict__[key] = {k: redactor.redact(v) if isinstance(v, str) else v for k, v in value.items()}


class RedactingFilter(logging.Filter):
    """Second line of defence on the handler: records built without the record factory
    (logging.makeLogRecord, as queue and socket listeners do) are redacted here, and so are the
    texts a record carries in ``extra``."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        _redact_extra(record)
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of LOG_FORMAT: ``text`` or ``json``."""
    if log_format == "json":
        # python-json-logger is imported only for LOG_FORMAT=json.
        from bot.json_logs import JsonFormatter

        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"LOG_FORMAT must be text or json, not {log_format!r}")


def setup_logging(level: str = "INFO", *, stream=None, secrets: Iterable[str | None] = (),
                  log_format: str = "text") -> None:
    """The root handler: redacted records, as text lines or (``log_format="json"``) JSON lines."""
    install_redaction()
    register_secrets(*secrets, pinned=True)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter_for(log_format))
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
