"""LOG_FORMAT=json: one JSON object per line through python-json-logger, every value redacted.

Imported by bot.logs.formatter_for only when JSON lines are asked for.
"""

from __future__ import annotations

import datetime
import logging

from pythonjsonlogger import json as _json_log

from bot.logs import MASK, redactor

_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085",
                                  "\r": "\\r", "\n": "\\n"})
# The first keys of every JSON line, in this order; an event's keys follow.
JSON_KEYS = ("ts", "level", "logger", "event", "message")


class JsonFormatter(_json_log.JsonFormatter):
    """One JSON object per line through python-json-logger: ``ts`` (ISO 8601, UTC), ``level``,
    ``logger``, ``event`` (the event's name, null for other lines), ``message``, then the event's
    keys (bot/events.py), then anything else the record carries (``exc_info``: the traceback, as
    text, already redacted)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level", "name": "logger"},
                         timestamp="ts", json_ensure_ascii=False)

    def process_log_record(self, log_data: dict) -> dict:
        fields = log_data.pop("event_fields", None)
        ordered = {key: log_data.pop(key, None) for key in JSON_KEYS}
        if isinstance(fields, dict):
            for key in fields:
                log_data.pop(key, None)  # the same value, set on the record as well
            ordered.update((key, value) for key, value in fields.items() if key not in ordered)
        ordered.update(log_data)
        return {key: _redacted_value(key, value) for key, value in ordered.items()}

    def format(self, record: logging.LogRecord) -> str:
        # The line separators JSON allows raw are escaped: one record, one line, for every
        # reader that splits on them.
        return super().format(record).translate(_LINE_SEPARATORS)


_SECRET_KEYS = frozenset({"discord", "token", "authorization", "discord_token", "token_encryption_key"})


def _redacted_value(key: object, value: object) -> object:
    """A JSON line's value with every secret masked, however deep: the value of a secret-named
    key whole, every text through the redactor, anything else as its redacted text (the
    encoder would write ``str()`` of it unmasked)."""
    if isinstance(key, str) and key.lower() in _SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str):
        return redactor.redact(value)
    if value is None or isinstance(value, (bool, int, float, datetime.date, datetime.time)):
        return value  # the encoder writes times as ISO 8601
    if isinstance(value, dict):
        return {k: _redacted_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redacted_value(None, v) for v in value]
    return redactor.redact(str(value))
