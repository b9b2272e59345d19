"""``python -m bot`` as an admin runs it: settings errors are one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bot(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "PIXVERSE_", "TOKEN_", "DATABASE_", "LOG_", "SHARD_", "LEASE_"))}
    base["PYTHONPATH"] = str(ROOT)
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot"], cwd=cwd, env=base, capture_output=True, text=True, timeout=60
    )


def test_missing_discord_token_is_one_line_and_non_zero(tmp_path):
    result = run_bot({}, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == ["Configuration error: DISCORD_TOKEN is required (set it in the environment or in .env)"]


def test_bad_setting_is_named_without_its_value(tmp_path):
    result = run_bot({"DISCORD_TOKEN": "secret-bot-token", "PIXVERSE_MAX_CONCURRENT_JOBS": "zero"}, tmp_path)
    assert result.returncode == 2
    assert "PIXVERSE_MAX_CONCURRENT_JOBS" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret-bot-token" not in result.stderr and "zero" not in result.stderr


def test_settings_are_read_from_dotenv(tmp_path):
    (tmp_path / ".env").write_text("DISCORD_TOKEN=\nLOG_LEVEL=debug\n")
    result = run_bot({}, tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN: must not be empty" in result.stderr



def test_every_cog_module_is_a_loaded_extension():
    # A cog added to cogs/ but not to EXTENSIONS would silently never load.
    import importlib
    import pkgutil

    import cogs
    from bot.discord_bot import EXTENSIONS

    modules = {f"cogs.{m.name}" for m in pkgutil.iter_modules(cogs.__path__) if not m.name.startswith("_")}
    assert modules == set(EXTENSIONS)
    for name in EXTENSIONS:
        assert callable(importlib.import_module(name).setup)


def test_no_module_of_the_bot_shadows_the_standard_library():
    # `python bot/__main__.py` puts bot/ first on sys.path: a bot/logging.py or bot/http/ there
    # would be imported in place of the standard library's (it was: "partially initialized module").
    names = set(sys.stdlib_module_names)
    for package in ("bot", "cogs"):
        for entry in (ROOT / package).iterdir():
            assert entry.name.removesuffix(".py") not in names, f"{package}/{entry.name} shadows the standard library"


def test_the_bot_also_starts_as_a_script(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bot" / "__main__.py")], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}, "PYTHONPATH": str(ROOT),
             "DISCORD_TOKEN": ""},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "Configuration error: DISCORD_TOKEN: must not be empty"



def test_startup_freezes_what_lives_and_collects_its_garbage_first():
    # In a process of its own: freezing would take this test process's objects out of the collector's sight.
    code = """
import gc, weakref
from bot.discord_bot import freeze_startup_objects
class Node: pass
kept = Node()
dropped = Node(); dropped.itself = dropped  # a cycle: only the collector frees it
gone = weakref.ref(dropped)
del dropped
freeze_startup_objects()
print(gone() is None, any(o is kept for o in gc.get_objects()), gc.get_freeze_count() > 0)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    # The dropped cycle was collected, not frozen for the life of the process; what lives is frozen.
    assert result.stdout.split() == ["True", "False", "True"]

# --- PostgreSQL and shards: each settings error is one line, exit 2, and never the password ----

KEY = "tFzJ3Tz4mdU0K8ZyFw8m2a8yqVvTQm6Yq9y0mXk7D1c="  # a Fernet key made for these tests only


def config_error(env: dict[str, str], tmp_path) -> str:
    result = run_bot({"DISCORD_TOKEN": "secret-bot-token", **env}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "s3cretpw" not in lines[0] and "secret-bot-token" not in lines[0]
    return lines[0]


def test_database_url_of_another_scheme_is_refused(tmp_path):
    assert config_error({"DATABASE_URL": "mysql://bot:s3cretpw@db/pixverse", "TOKEN_ENCRYPTION_KEY": KEY}, tmp_path) == (
        "Configuration error: DATABASE_URL: must be a postgresql:// URL"
        " (postgresql://user:password@host:5432/dbname); leave it unset for SQLite at DATABASE_PATH"
    )


def test_a_database_url_query_asyncpg_cannot_read_is_a_settings_error(tmp_path):
    """asyncpg reads the query strictly: one that is not name=value pairs would stop the bot at the
    database with Python's traceback, exit 1 (a restart loop), quoting the query's text."""
    for query in ("s3cretpw", "sslmode=require&", "a=1&&b=2"):
        assert config_error({"DATABASE_URL": f"postgresql://bot:s3cretpw@db:5432/pixverse?{query}",
                             "TOKEN_ENCRYPTION_KEY": KEY}, tmp_path) == (
            "Configuration error: DATABASE_URL: has a query string (after ?) that is not name=value pairs joined"
            " by & (postgresql://user:password@host:5432/dbname?sslmode=require)")


def test_an_unexpected_error_is_logged_through_the_bots_logging_masked_exit_1(tmp_path):
    """Whatever the bot did not foresee still ends as a log record: in LOG_FORMAT's shape, its
    secrets masked, not Python's bare traceback on stderr."""
    script = ("import sys, bot.__main__ as m\n"
              "async def run(settings):\n"
              "    raise RuntimeError('boom near ' + settings.discord_token.get_secret_value())\n"
              "m.run = run\n"
              "sys.exit(m.main([]))\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "PIXVERSE_", "TOKEN_", "DATABASE_", "LOG_"))}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**base, "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": "secret-bot-token-value",
                                 "LOG_FORMAT": "json", "DATABASE_PATH": str(tmp_path / "bot.db")})
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert [(r["level"], r["message"]) for r in records] == [("CRITICAL", "Stopped by an unexpected error")]
    assert "RuntimeError: boom near " in records[0]["exc_info"]
    assert "secret-bot-token-value" not in result.stderr + result.stdout


def test_postgresql_needs_the_token_key(tmp_path):
    assert config_error({"DATABASE_URL": "postgresql://bot:s3cretpw@db:5432/pixverse"}, tmp_path) == (
        "Configuration error: TOKEN_ENCRYPTION_KEY is required with DATABASE_URL (PostgreSQL): no key file can"
        " live beside a server database; set the key every bot process shares (and that the SQLite database"
        " used, if you copy it)"
    )


def test_a_token_key_that_is_not_a_fernet_key_is_a_settings_error_at_once(tmp_path):
    """Before logging in or opening anything: exit 2, and the value given is never shown."""
    for bad in ("not-a-key-at-all", "c2hvcnQ=", "é" * 44):
        assert config_error({"TOKEN_ENCRYPTION_KEY": bad}, tmp_path) == (
            "Configuration error: TOKEN_ENCRYPTION_KEY: is not a valid Fernet key (32 url-safe base64-encoded"
            ' bytes); make one with: python -c "from cryptography.fernet import Fernet;'
            ' print(Fernet.generate_key().decode())"')
    assert not (tmp_path / "data").exists()


def test_shard_ids_need_a_count_in_range_without_repeats(tmp_path):
    assert config_error({"SHARD_IDS": "0"}, tmp_path) == (
        "Configuration error: SHARD_IDS: needs SHARD_COUNT, the number of shards of all processes together"
    )
    assert config_error({"SHARD_COUNT": "2", "SHARD_IDS": "0,2"}, tmp_path) == (
        "Configuration error: SHARD_IDS: shard 2 is out of range: with SHARD_COUNT=2 shards are 0 to 1"
    )
    assert config_error({"SHARD_COUNT": "4", "SHARD_IDS": "1,3,1"}, tmp_path) == (
        "Configuration error: SHARD_IDS: names a shard twice"
    )
    assert config_error({"SHARD_COUNT": "4", "SHARD_IDS": "one"}, tmp_path) == (
        "Configuration error: SHARD_IDS: must be shard numbers separated by commas, for example 0,1"
    )
    assert config_error({"SHARD_COUNT": "4", "SHARD_IDS": "[]"}, tmp_path) == (
        "Configuration error: SHARD_IDS: must be shard numbers separated by commas, for example 0,1"
    )
    # Set in code (a test, an embedding): no shard at all is refused too, not left to fail each lease.
    import pytest
    from pydantic import ValidationError

    from bot.settings import Settings

    with pytest.raises(ValidationError, match="names no shard"):
        Settings(_env_file=None, discord_token="x", shard_count=2, shard_ids=())
    # A bad count is named once, not again as a missing count of SHARD_IDS.
    assert config_error({"SHARD_COUNT": "0", "SHARD_IDS": "0"}, tmp_path) == (
        "Configuration error: SHARD_COUNT: Input should be greater than or equal to 1"
    )


def test_valid_shard_settings_are_read_as_written(monkeypatch):
    from bot.settings import Settings

    settings = Settings(_env_file=None, discord_token="x", shard_count=4, shard_ids=" 3, 1")
    assert (settings.shard_count, settings.shard_ids) == (4, (3, 1))
    # Discord's rule, (server id >> 22) % shard count: 81384788765712384 >> 22 is 19403645698.
    assert settings.shard_of(81384788765712384) == 2
    assert settings.shard_of("81384788765712384") == 2


async def test_an_unreachable_postgresql_is_one_line_without_the_password(caplog):
    import pytest

    from bot.core import Core
    from bot.errors import StartupError
    from bot.settings import Settings
    from tests.processes.common import NoDiscord

    settings = Settings(_env_file=None, discord_token="x", token_encryption_key=KEY, http_port=0,
                        database_url="postgresql://bot:s3cretpw@127.0.0.1:1/pixverse")
    with pytest.raises(StartupError) as info:
        await Core.open(settings, NoDiscord())
    assert str(info.value).startswith("Cannot open the database postgresql://bot@127.0.0.1:1/pixverse: ")
    assert "s3cretpw" not in str(info.value) and "s3cretpw" not in caplog.text


def test_the_example_settings_file_names_every_setting_with_a_valid_value():
    """.env.example is where the README sends a host: every setting is there, and its values start."""
    from bot.settings import Settings

    example = Path(__file__).resolve().parents[1] / ".env.example"
    text = example.read_text()
    assert [name.upper() for name in Settings.model_fields if name.upper() not in text] == []
    settings = Settings(_env_file=example, discord_token="x")
    assert settings.http_port == 8080 and settings.interaction_window_seconds == 840
