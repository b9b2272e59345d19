"""The Core on its own, without discord.py: built once, in order; released in reverse; nothing left open."""

from __future__ import annotations

import socket

import pytest
from cryptography.fernet import Fernet

from bot.core import Core
from bot.errors import StartupError
from bot.settings import Settings
from tests.e2e.test_http_api import free_port


class QuietDiscord:
    """A DiscordView for tests: every channel visible, the gateway connected, no history."""

    async def channel_visible(self, guild_id: str, channel_id: str) -> bool | None:
        return True

    def gateway_problem(self) -> str | None:
        return None

    async def read_history(self, channel_id: str, after: int):
        return
        yield


def settings(tmp_path, **overrides) -> Settings:
    values = dict(_env_file=None, discord_token="core-test-bot-token", database_path=tmp_path / "data" / "bot.db",
                  token_encryption_key=Fernet.generate_key().decode(), pixverse_backend="simulated", http_port=0)
    values.update(overrides)
    return Settings(**values)


async def test_open_builds_every_service_and_close_releases_them_in_reverse(tmp_path, monkeypatch):
    from bot.store.sqlite.database import Database
    from bot.dispatch.dispatcher import Dispatcher
    from bot.web.callbacks import ReplyPoster
    from bot.web.server import LimitedServer

    closed: list[str] = []
    for name, cls, method in (("http", LimitedServer, "stop"), ("dispatcher", Dispatcher, "close"),
                              ("replies", ReplyPoster, "close"), ("database", Database, "close")):
        original = getattr(cls, method)

        async def record(self, *args, _name=name, _original=original, **kwargs):
            closed.append(_name)
            return await _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, record)
    core = await Core.open(settings(tmp_path, http_port=free_port(), http_host="127.0.0.1"), QuietDiscord())
    assert core.http is not None and core.http.port > 0
    assert await core.health_problem() is None
    assert core.replies in core.dispatcher.listeners and core.dispatcher in core.accounts.listeners
    await core.close()
    await core.close()  # a second close does nothing
    # No new request reaches a closing dispatcher; its last notices still reach the poster.
    assert closed == ["http", "dispatcher", "replies", "database"]
    assert not (tmp_path / "data" / "bot.db-wal").exists()
    with socket.socket() as probe:  # the HTTP port is free again
        probe.bind(("127.0.0.1", core.http.port))


async def test_a_failure_half_way_releases_what_was_opened(tmp_path):
    key = Fernet.generate_key().decode()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"HTTP API could not listen on 127.0.0.1:{port}"):
            await Core.open(settings(tmp_path, http_port=port, http_host="127.0.0.1", token_encryption_key=key),
                            QuietDiscord())
    # The database opened before the failure was closed: checkpointed, no -wal left, and it
    # opens again at once (no lock held by a forgotten connection).
    assert not (tmp_path / "data" / "bot.db-wal").exists()
    core = await Core.open(settings(tmp_path, token_encryption_key=key), QuietDiscord())
    assert core.http is None
    await core.close()


async def test_leases_and_jobs_are_timed_by_the_databases_clock(tmp_path, monkeypatch):
    """Processes on several machines compare the times they write: each takes the database's clock,
    measured at start and again at each lease renewal, whatever its machine's says."""
    import time

    from bot.store.sqlite.database import Database

    ahead = {"by": 600.0}

    async def database_clock(self) -> float:
        return time.time() + ahead["by"]

    monkeypatch.setattr(Database, "clock", database_clock)
    core = await Core.open(settings(tmp_path), QuietDiscord())
    try:
        assert core.dispatcher.clock() - time.time() == pytest.approx(600, abs=5)
        await core.dispatcher.start()
        jobs = core.db.stores(None).jobs
        assert await jobs.live_owners(now=time.time() + 600, ttl=core.dispatcher.lease_ttl) == [core.dispatcher.owner]
        ahead["by"] = 1200.0
        await core.dispatcher.sweep()  # renews the lease first
        assert core.dispatcher.clock() - time.time() == pytest.approx(1200, abs=5)
        assert await jobs.live_owners(now=time.time() + 1200 - 30, ttl=core.dispatcher.lease_ttl) == [
            core.dispatcher.owner]
    finally:
        await core.close()


async def test_health_reports_a_stalled_sweep_before_the_gateway(tmp_path, monkeypatch):
    core = await Core.open(settings(tmp_path), QuietDiscord())
    try:
        monkeypatch.setattr(core.dispatcher, "stalled", lambda: "the dispatcher's sweep has been under way for 151 s")
        assert await core.health_problem() == "the dispatcher's sweep has been under way for 151 s"
    finally:
        await core.close()


async def test_health_reports_the_gateway_through_the_view(tmp_path):
    class Disconnected(QuietDiscord):
        def gateway_problem(self) -> str | None:
            return "not connected to the Discord gateway"

    core = await Core.open(settings(tmp_path), Disconnected())
    try:
        assert await core.health_problem() == "not connected to the Discord gateway"
    finally:
        await core.close()



def test_no_sql_and_no_driver_outside_the_store_adapters():
    """The domain, the Core, the web layer and the cogs speak the store port only."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sql = re.compile(r"""["'](SELECT |INSERT INTO |UPDATE \w+ SET |DELETE FROM |PRAGMA |BEGIN)""")
    driver = re.compile(r"^\s*(import|from)\s+(sqlite3|aiosqlite|asyncpg)\b", re.M)
    offenders = []
    for path in [*(root / "bot").rglob("*.py"), *(root / "cogs").rglob("*.py")]:
        if "store" in path.relative_to(root).parts[:2] and path.parent.name != "store":
            continue  # bot/store/<engine>/ is where SQL and drivers belong
        text = path.read_text()
        if sql.search(text) or driver.search(text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_the_domain_loads_no_store_adapter():
    """The dispatcher, its backends and the account service import the port, never an adapter:
    importing them in a fresh interpreter loads neither bot.store.sqlite nor a driver."""
    import subprocess
    import sys

    code = ("import sys, bot.dispatch.dispatcher, bot.dispatch.backends.discord, bot.accounts.service; "
            "print(sorted(m for m in sys.modules if m.startswith('bot.store.sqlite') or m in ('aiosqlite', 'asyncpg')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


OPTIONAL_LIBRARIES_LOADED = """
import asyncio, sys
sys.path.insert(0, {root!r})
import bot.__main__, bot.discord_bot, cogs.accounts, cogs.jobs, cogs.api_tokens, cogs.settings, cogs.operators
from pathlib import Path
from bot.core import Core
from bot.logs import setup_logging
from tests.test_core import QuietDiscord, settings
from tests.e2e.test_http_api import free_port

async def main():
    setup_logging("INFO", log_format={log_format!r})
    core = await Core.open(settings(Path({tmp!r}), http_port=free_port(), http_host="127.0.0.1",
                                    metrics_enabled={metrics!r}), QuietDiscord())
    await core.close()
    print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"prometheus_client", "pythonjsonlogger"}}))

asyncio.run(main())
"""


@pytest.mark.parametrize(("metrics", "log_format", "loaded"), [
    (False, "text", "[]"),
    (True, "json", "['prometheus_client', 'pythonjsonlogger']"),
])
def test_metrics_and_json_logs_cost_nothing_unless_asked_for(tmp_path, metrics, log_format, loaded):
    """With the defaults (METRICS_ENABLED=false, LOG_FORMAT=text) a started Core, its HTTP API and every
    cog leave prometheus_client and python-json-logger unimported: no memory, no start time."""
    import subprocess
    import sys
    from pathlib import Path

    code = OPTIONAL_LIBRARIES_LOADED.format(root=str(Path(__file__).resolve().parent.parent), tmp=str(tmp_path),
                                            log_format=log_format, metrics=metrics)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == loaded


async def test_a_database_set_up_with_another_key_is_refused_even_before_it_holds_tokens(tmp_path):
    """Its key check names the key another process (or this one, before) uses: that process would
    save tokens this key could not read. Exit code 2: no restart helps until the key is set right."""
    first = await Core.open(settings(tmp_path, token_encryption_key=None), QuietDiscord())  # the generated key file
    await first.close()
    with pytest.raises(StartupError) as refused:
        await Core.open(settings(tmp_path), QuietDiscord())
    database, key_file = tmp_path / "data" / "bot.db", tmp_path / "data" / "bot.db.key"
    assert (str(refused.value), refused.value.lasting) == (
        f"The database {database} was set up with another token key (it holds no account tokens yet): set"
        f" TOKEN_ENCRYPTION_KEY to that key, or unset it to use {key_file}; every bot process on a database"
        " needs the same key", True)
    again = await Core.open(settings(tmp_path, token_encryption_key=None), QuietDiscord())  # as advised
    await again.close()
