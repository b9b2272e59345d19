"""``python -m bot --help`` and ``--version`` print and exit; the lines startup failures are made of."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HTTP_", "DATABASE_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_help_prints_and_exits_0_without_starting_the_bot(tmp_path):
    # No DISCORD_TOKEN: were it to start the bot, it would exit 2 with a settings error.
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m bot")
    for word in ("--version", "copy-to-postgres", "healthcheck"):
        assert word in result.stdout
    assert result.stderr == ""
    assert not (tmp_path / "data").exists()
    check = run("healthcheck", "--help", cwd=tmp_path)
    assert check.returncode == 0 and "HTTP_PORT=0" in check.stdout


def test_version_prints_the_projects_version(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{project['name']} {project['version']}\n"


def test_an_unknown_command_is_a_usage_error(tmp_path):
    result = run("frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_an_exception_without_text_is_named_by_its_type():
    import aiohttp
    import discord

    from bot.__main__ import failure_line, reason
    from bot.errors import StartupError

    assert reason(TimeoutError()) == "TimeoutError"
    assert reason(OSError("")) == "OSError"
    assert reason(ValueError("first line\nsecond")) == "first line"
    assert failure_line(TimeoutError(), ran=False) == "Could not start: TimeoutError"
    assert failure_line(aiohttp.ServerDisconnectedError(""), ran=True).startswith("Stopped: ")
    assert failure_line(aiohttp.ClientConnectionError(), ran=False) == "Could not start: ClientConnectionError"
    assert failure_line(StartupError(), ran=False) == "Could not start: StartupError"
    assert failure_line(discord.GatewayNotFound(), ran=False) == (
        "Could not start: The gateway to connect to discord was not found.")
    assert failure_line(KeyError("a bug"), ran=False) is None  # a bug keeps its traceback


@pytest.mark.parametrize(("host", "url"), [
    ("0.0.0.0", "http://127.0.0.1:8080/healthz"),
    ("", "http://127.0.0.1:8080/healthz"),
    ("::", "http://[::1]:8080/healthz"),
    ("127.0.0.1", "http://127.0.0.1:8080/healthz"),
    ("::1", "http://[::1]:8080/healthz"),
    ("bot.internal", "http://bot.internal:8080/healthz"),
])
def test_the_health_check_asks_the_loopback_when_the_bot_listens_everywhere(host, url):
    from bot.__main__ import healthz_url

    assert healthz_url(host, 8080) == url


def test_the_container_port_applies_unless_the_api_is_off():
    from bot.__main__ import HttpSettings
    from bot.settings import Settings

    def settings(**values):
        return Settings(_env_file=None, discord_token="x", **values)

    assert settings(http_port=9090).http_port == 9090
    assert settings(http_port=9090, http_container_port=8080).http_port == 8080
    assert settings(http_port=0, http_container_port=8080).http_port == 0  # off stays off
    assert settings(http_port=9090, http_container_port="").http_port == 9090  # blank: unset
    assert HttpSettings(_env_file=None, http_port=9090, http_container_port=8080).listen_port == 8080
    assert HttpSettings(_env_file=None, http_port=0, http_container_port=8080).listen_port == 0
    assert settings().discord_connect_timeout_seconds == 30
