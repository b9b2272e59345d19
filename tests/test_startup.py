"""``python -m bot`` as an admin runs it: settings errors are one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bot(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "PIXVERSE_", "TOKEN_", "DATABASE_", "LOG_"))}
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
    assert "DISCORD_TOKEN: Value error, must not be empty" in result.stderr



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
    assert result.stderr.strip() == "Configuration error: DISCORD_TOKEN: Value error, must not be empty"
