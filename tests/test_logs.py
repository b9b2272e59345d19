"""Secrets are masked in every log record, whatever logger or level produced it."""

from __future__ import annotations

import contextlib
import io
import logging

from bot.logs import MASK, SecretRedactor, register_secrets, setup_logging
from tests.conftest import TOKEN


def test_registered_secret_is_masked_in_message_args_and_traceback():
    register_secrets("registered-secret-value-42")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("token is %s", "registered-secret-value-42")
        try:
            raise ValueError("bad registered-secret-value-42")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "registered-secret-value-42" not in output
    assert f"token is {MASK}" in output
    assert f"ValueError: bad {MASK}" in output


def test_interaction_option_named_discord_is_masked_in_gateway_dumps():
    redactor = SecretRedactor()
    # How discord.py's gateway logs an INTERACTION_CREATE at DEBUG (a dict repr).
    payload = {
        "t": "INTERACTION_CREATE",
        "d": {
            "data": {
                "name": "pixverse-account",
                "options": [
                    {"type": 3, "name": "discord", "value": "short'tok}{en"},
                    {"type": 3, "name": "server", "value": "111111111111111111"},
                    {"value": 'q"uo}te', "name": "discord", "type": 3},
                ],
            }
        },
    }
    text = redactor.redact(str(payload))
    assert "tok" not in text and "uo}te" not in text
    assert "111111111111111111" in text
    # Same in JSON form.
    import json

    text = redactor.redact(json.dumps(payload))
    assert "short" not in text and "uo}te" not in text


def test_token_shapes_and_secret_keys_are_masked():
    redactor = SecretRedactor()
    assert TOKEN not in redactor.redact(f"Authorization failed for {TOKEN}")
    text = redactor.redact("{'Authorization': 'abc', 'discord': \"xyz\", 'server': '1'}")
    assert "abc" not in text and "xyz" not in text and "'1'" in text


def test_a_database_password_is_known_as_written_as_read_and_from_the_query():
    from bot.store.postgres.database import url_passwords

    assert url_passwords("postgresql://bot:s%40cret-pass@db/pixverse") == ("s%40cret-pass", "s@cret-pass")
    assert url_passwords("postgresql://bot@db/pixverse?sslmode=disable&password=query-secret") == ("query-secret",)
    assert url_passwords("postgresql://bot@db/pixverse") == ()
    redactor = SecretRedactor()
    redactor.register(*url_passwords("postgresql://bot:s%40cret-pass@db/x?password=query-secret"), pinned=True)
    assert redactor.redact("login s@cret-pass / s%40cret-pass / query-secret") == f"login {MASK} / {MASK} / {MASK}"


def test_short_registered_values_do_not_garble_logs():
    redactor = SecretRedactor()
    redactor.register("abc")
    assert redactor.redact("abcdef") == "abcdef"


@contextlib.contextmanager
def root_logging_kept():
    """The root logger's handlers and level as they were, whatever setup_logging changes inside
    (and aiosqlite's level, which it sets)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("aiosqlite").setLevel(logging.NOTSET)


def test_setup_logging_keeps_aiosqlite_quiet_at_debug():
    stream = io.StringIO()
    with root_logging_kept():
        setup_logging("DEBUG", stream=stream, secrets=["bot-token-secret-value"])
        logging.getLogger("discord.gateway").debug("identify with bot-token-secret-value")
        logging.getLogger("aiosqlite").debug("executing insert with params")
        output = stream.getvalue()
        assert "bot-token-secret-value" not in output and MASK in output
        assert "executing" not in output


def test_log_format_json_writes_one_object_per_line_through_the_root_handler():
    import json

    import pytest

    from bot.events import Events

    stream = io.StringIO()
    with root_logging_kept():
        setup_logging("INFO", stream=stream, secrets=["json-pinned-secret-value"], log_format="json")
        Events().emit("account.out_of_rotation", server="1", channel="2", reason="json-pinned-secret-value refused")
        logging.getLogger("test.json").info("multi\nline %s", "json-pinned-secret-value")
    event, plain = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: event[k] for k in ("level", "logger", "event", "server", "channel", "reason")} == {
        "level": "INFO", "logger": "bot.events", "event": "account.out_of_rotation", "server": "1", "channel": "2",
        "reason": f"{MASK} refused"}
    assert event["ts"].endswith("+00:00")
    assert plain == {"ts": plain["ts"], "level": "INFO", "logger": "test.json", "event": None,
                     "message": f"multi\nline {MASK}"}
    with pytest.raises(ValueError):
        setup_logging("INFO", stream=io.StringIO(), log_format="xml")


def test_recent_secrets_are_bounded_but_pinned_ones_stay():
    from bot.logs import _MAX_RECENT

    redactor = SecretRedactor()
    redactor.register("pinned-bot-token-value", pinned=True)
    for n in range(_MAX_RECENT + 100):
        redactor.register(f"account-token-{n:06d}")
    assert len(redactor) == _MAX_RECENT + 1
    assert redactor.redact("pinned-bot-token-value") == MASK
    assert redactor.redact(f"account-token-{_MAX_RECENT + 99:06d}") == MASK
    # The oldest run-time secret was forgotten (the structural rules still apply to it).
    assert redactor.redact("account-token-000000") == "account-token-000000"


def test_records_made_without_the_factory_are_redacted_by_the_handler():
    from bot.logs import RedactingFilter

    register_secrets("queue-listener-secret-1")
    record = logging.makeLogRecord({"msg": "token %s", "args": ("queue-listener-secret-1",), "levelno": 20})
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"token {MASK}"


def test_registering_compiles_nothing_and_a_record_costs_one_pass(monkeypatch):
    """The old redactor rebuilt one alternation of every secret on the next record (and kept
    each in re's cache): 1,600 registrations took 2.3 GB. Now nothing is compiled at all."""
    import random
    import re
    import string

    redactor = SecretRedactor()
    compiled = []
    real_compile = re.compile
    monkeypatch.setattr(re, "compile", lambda *a, **k: compiled.append(a) or real_compile(*a, **k))
    rng = random.Random(7)
    secrets = ["".join(rng.choices(string.ascii_letters + string.digits, k=500)) for _ in range(2000)]
    for secret in secrets:
        redactor.register(secret)
        redactor.redact(f"saving {secret[:20]}")
    assert compiled == []
    line = redactor.redact(f"leak {secrets[0]}, and {secrets[-1]}. done")
    assert line == f"leak {MASK}, and {MASK}. done"


def test_secrets_next_to_punctuation_and_keys_without_padding_are_masked():
    redactor = SecretRedactor()
    key = "q" * 43 + "="
    redactor.register(key, "apitoken_abcdefgh-123")
    assert redactor.redact(f"key={key}.") == f"key={MASK}=."  # the padding says nothing
    assert redactor.redact(f"key {key[:-1]} cut") == f"key {MASK} cut"
    assert redactor.redact("Bearer apitoken_abcdefgh-123.") == f"Bearer {MASK}."
    # Glued to other characters, before (an escape, a short word) or after, it is masked all the same.
    assert redactor.redact("xapitoken_abcdefgh-123x") == f"x{MASK}x"
    assert redactor.redact(repr("a\n" + key)) == f"'a\\n{MASK}='"
    assert redactor.redact("?token%3Dapitoken_abcdefgh-123&x=1") == f"?token%3D{MASK}&x=1"
    assert redactor.redact("Bearer-apitoken_abcdefgh-123_old") == f"Bearer-{MASK}_old"


def test_a_bot_token_with_odd_characters_is_still_masked_when_pinned():
    redactor = SecretRedactor()
    redactor.register("odd token with spaces!", pinned=True)
    redactor.register("unpinned odd value!!")  # not token-shaped, not pinned: not kept
    assert len(redactor) == 1
    assert redactor.redact("login odd token with spaces! failed") == f"login {MASK} failed"


def test_interaction_and_webhook_tokens_in_urls_are_masked():
    redactor = SecretRedactor()
    interaction = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OnF3ZXJ0eXVpb3Bhc2RmZ2hqa2w"
    lines = [
        f"POST https://discord.com/api/v10/interactions/1234567890123456789/{interaction}/callback with None has returned 204",
        f"PATCH https://discord.com/api/v10/webhooks/111111111111111111/{interaction}/messages/@original has returned 200",
        f"POST http://127.0.0.1:9/api/v10/webhooks/111111111111111111/{interaction}?wait=true",
    ]
    for line in lines:
        text = redactor.redact(line)
        assert interaction not in text and MASK in text
    assert "/messages/@original" in redactor.redact(lines[1])


def test_log_format_and_metrics_settings():
    import pytest
    from pydantic import ValidationError

    from bot.settings import Settings

    def settings(**values):
        return Settings(_env_file=None, discord_token="settings-test-token", **values)

    assert settings().log_format == "text"
    assert settings(log_format=" JSON ").log_format == "json"
    with pytest.raises(ValidationError):
        settings(log_format="xml")
    assert (settings().metrics_enabled, settings().metrics_token) == (False, None)
    assert settings(metrics_token="  ").metrics_token is None
    configured = settings(metrics_enabled="true", metrics_token="scrape-secret-123")
    assert configured.metrics_enabled and "scrape-secret-123" not in repr(configured)
    assert configured.metrics_token.get_secret_value() == "scrape-secret-123"


def test_json_lines_mask_secrets_at_any_depth_and_stay_one_line_for_any_separator():
    import json

    from bot.logs import RedactingFilter, formatter_for

    secret = "nested-secret-value-0123456789"
    register_secrets(secret)

    class Shown:
        def __str__(self) -> str:
            return f"object holding {secret}"

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter_for("json"))
    logger = logging.getLogger("test.json.depth")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("a\u2028b\u2029c\u0085d\re", extra={
            "token": "any value at all", "items": [secret, {"discord": "x", "n": 3}], "shown": Shown()})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert secret not in text and "any value at all" not in text
    [line] = text.splitlines()  # str.splitlines splits on U+2028, U+2029, U+0085 and \r too
    record = json.loads(line)
    assert record["message"] == "a\u2028b\u2029c\u0085d\re"
    assert (record["token"], record["items"], record["shown"]) == (
        MASK, [MASK, {"discord": MASK, "n": 3}], f"object holding {MASK}")
