"""``python -m bot``: settings, logging, run; a startup problem is one line and an exit code.

Startup's network steps each have a deadline (``DISCORD_CONNECT_TIMEOUT_SECONDS``): every request
to Discord until the gateway's first READY (the login's ``GET /users/@me``, the command sync,
``GET /gateway/bot``, the gateway's websocket handshake), and that first READY itself. Past one,
the bot stops with one line naming the URL and the wait, exit code 1. Once the gateway has sent
READY, discord.py reconnects by itself with backoff, as long as it takes.

SIGTERM and SIGINT stop the bot at any moment with exit code 0: a wait on Discord is cancelled, the
opening of the database (migrations) is let finish and then closed; a second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import StartupError
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

log = logging.getLogger("bot")

EXIT_CONFIG = 2
EXIT_STARTUP = 1
PROJECT = "pixverse-discord-bot"  # [project] name in pyproject.toml
HEALTHCHECK_TIMEOUT_SECONDS = 5.0


def reason(exc: BaseException) -> str:
    """An exception as the end of an operator's line: its text, or its type when it has none
    (``TimeoutError``), never an empty reason."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def settings_error_line(exc: ValidationError) -> str:
    """One line naming each bad variable; never the value given (it may be a secret)."""
    problems = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across settings: its text names them
            problems.append(error["msg"].removeprefix("Value error, "))
            continue
        name = str(error["loc"][0]).upper()
        if error["type"] == "missing":
            problems.append(f"{name} is required (set it in the environment or in .env)")
        else:  # a rule of ours says "Value error, <text>": the text alone
            problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "Configuration error: " + "; ".join(problems)


# --- running the bot ----------------------------------------------------------------------


class Startup:
    """Logs in and connects; knows which step is under way, and which one is late."""

    def __init__(self, bot: PixverseBot, limit: float, gateway_url: str) -> None:
        self.bot = bot
        self.limit = limit
        self.gateway_url = gateway_url
        self.phase = "login"  # then "connect": the gateway, until the bot stops
        self.connect_started: float | None = None

    async def login_and_connect(self, token: str) -> None:
        # discord.py's Client.start, in its two steps: login (GET /users/@me, the application,
        # then setup_hook: database, cogs, command sync) and the gateway.
        await self.bot.login(token)
        if self.bot.is_closed():
            return  # stopped during setup_hook
        self.phase = "connect"
        self.connect_started = time.monotonic()
        await self.bot.connect(reconnect=True)

    def waiting_on_discord(self) -> bool:
        """True when cancelling the task loses nothing: it waits on Discord (a request, the gateway),
        not on the database (a migration is let finish, then setup_hook closes the Core)."""
        return self.phase == "connect" or len(self.bot.discord_requests) > 0

    def late(self) -> str | None:
        """The line for the first startup step Discord has not finished within the limit."""
        now = time.monotonic()
        limit = f"within {self.limit:g} s (DISCORD_CONNECT_TIMEOUT_SECONDS)"
        request = self.bot.discord_requests.oldest()
        # The gateway's first READY has its own deadline, from the start of the connection; a
        # request still waiting then (GET /gateway/bot, the websocket handshake) is what is late.
        gateway_late = self.connect_started is not None and now - self.connect_started >= self.limit
        if request is not None and (gateway_late or now - request.started >= self.limit):
            if request.gateway:
                return f"Could not start: Discord's gateway did not answer at {request.shown_url} {limit}"
            return f"Could not start: Discord did not answer {request.method} {request.shown_url} {limit}"
        if gateway_late:
            gateway = self.bot.discord_requests.last_gateway
            url = gateway.shown_url if gateway is not None else self.gateway_url
            return f"Could not start: Discord's gateway {url} sent no READY {limit}"
        return None

    async def deadline(self) -> str:
        """Returns the line of the first late step; waits forever once the gateway sent READY."""
        poll = min(0.25, self.limit / 4)
        while not self.bot.reached_gateway.is_set():
            line = self.late()
            if line is not None:
                return line
            await asyncio.sleep(poll)
        await asyncio.Future()  # cancelled when the bot stops
        raise AssertionError("unreachable")

    async def stop(self, runner: asyncio.Task, force: asyncio.Event) -> None:
        """Leaves Discord and closes the Core (discord_bot.PixverseBot.close), and ends the runner."""
        if self.waiting_on_discord():
            runner.cancel()  # first: discord.py would log a retry of a connect cut by the close
        await self.bot.close()
        while not runner.done():
            if self.waiting_on_discord() or force.is_set():
                runner.cancel()
            await asyncio.wait({runner}, timeout=0.1)
        if not runner.cancelled() and runner.exception() is not None:
            log.info("Startup ended while stopping: %s: %s", type(runner.exception()).__name__,
                     reason(runner.exception()))


def failure_line(exc: BaseException, ran: bool) -> str | None:
    """The one line for an expected failure; None for a bug (its traceback is worth more)."""
    import aiohttp
    import discord

    if isinstance(exc, StartupError):
        return str(exc) or "Could not start: " + type(exc).__name__
    if isinstance(exc, discord.LoginFailure):
        return "Discord rejected DISCORD_TOKEN: check the bot token in the Developer Portal"
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        # The one privileged intent the bot asks for (bot/discord_bot.py).
        return ("Discord refused the Message Content intent the bot needs: enable it in the Developer Portal"
                " (Bot page, Privileged Gateway Intents)")
    if isinstance(exc, (OSError, aiohttp.ClientError, discord.DiscordException)):
        return f"{'Stopped' if ran else 'Could not start'}: {reason(exc)}"
    return None


async def run(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()
    signals: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if stop.is_set():
            log.info("%s again: stopping now", sig.name)
            force.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    from bot.discord_bot import PixverseBot

    bot = PixverseBot(settings)
    startup = Startup(bot, settings.discord_connect_timeout_seconds, settings.discord_gateway_url)
    async with bot:
        runner = asyncio.create_task(startup.login_and_connect(settings.discord_token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        watchdog = asyncio.create_task(startup.deadline())
        try:
            done, _ = await asyncio.wait({runner, stopper, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            watchdog.cancel()
        if stop.is_set():
            log.info("Shutting down (%s)", signals[0])
            await startup.stop(runner, force)
            log.info("Stopped cleanly")
            return 0
        if watchdog in done:
            await startup.stop(runner, force)
            raise StartupError(watchdog.result())
        exc = runner.exception()
        if exc is None:
            return 0  # the bot was closed from inside
        line = failure_line(exc, ran=bot.reached_gateway.is_set())
        if line is None:
            raise exc
        import discord

        # A token Discord rejects, or an intent it refuses, stays so until the operator changes it.
        lasting = getattr(exc, "lasting", False) or isinstance(exc, (discord.LoginFailure,
                                                                      discord.PrivilegedIntentsRequired))
        raise StartupError(line, lasting=lasting) from exc


# --- the health check -----------------------------------------------------------------------


class HttpSettings(BaseSettings):
    """The HTTP API's settings alone, as Settings reads them: the health check needs no token."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    http_host: str = Settings.model_fields["http_host"].default
    http_port: int = Field(default=Settings.model_fields["http_port"].default, ge=0, le=65535)
    http_container_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("http_container_port", mode="before")
    @classmethod
    def _blank_port_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def listen_port(self) -> int:
        """The port the bot listens on (Settings._listen_on_the_container_port); 0: the API is off."""
        if self.http_port != 0 and self.http_container_port is not None:
            return self.http_container_port
        return self.http_port


def healthz_url(host: str, port: int) -> str:
    """Where to ask: the loopback when the bot listens on every interface."""
    host = host.strip()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"  # asyncio listens IPv6-only on "::": the IPv4 loopback would be refused
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def healthcheck(timeout: float) -> int:
    """``GET /healthz`` of the running bot: exit 0 on 200, else 1 with one line saying why."""
    import socket
    import urllib.error
    import urllib.request

    try:
        http = HttpSettings()
    except ValidationError as exc:
        print(f"unhealthy: {settings_error_line(exc)}", file=sys.stderr)
        return 1
    if http.listen_port == 0:
        # A check that always fails would have the container restarted or marked unhealthy for a
        # setting the operator chose: with the API off there is nothing to ask, so it passes.
        print("healthy as far as can be told: the HTTP API is off (HTTP_PORT=0), so /healthz cannot be asked")
        return 0
    url = healthz_url(http.http_host, http.listen_port)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through HTTP_PROXY
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error") or ""
        except (ValueError, AttributeError, OSError):
            detail = ""
        print(f"unhealthy: GET {url} answered {exc.code}" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 1
    except (TimeoutError, socket.timeout):
        print(f"unhealthy: GET {url} did not answer within {timeout:g} s", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        cause = exc.reason
        if isinstance(cause, TimeoutError):
            print(f"unhealthy: GET {url} did not answer within {timeout:g} s", file=sys.stderr)
        elif isinstance(cause, ConnectionRefusedError):
            print(f"unhealthy: nothing listens at {url} (connection refused): is the bot running?", file=sys.stderr)
        elif isinstance(cause, OSError) and cause.strerror:
            print(f"unhealthy: GET {url} failed: {cause.strerror}", file=sys.stderr)
        else:
            text = reason(cause) if isinstance(cause, BaseException) else str(cause) or "URLError"
            print(f"unhealthy: GET {url} failed: {text}", file=sys.stderr)
        return 1
    except OSError as exc:  # a connection reset, a malformed answer
        print(f"unhealthy: GET {url} failed: {reason(exc)}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: GET {url} answered {status}", file=sys.stderr)
        return 1
    print(f"healthy: GET {url} answered 200")
    return 0


# --- the command line -----------------------------------------------------------------------


def version() -> str:
    """The installed package's version, else the checkout's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(PROJECT)
    except PackageNotFoundError:
        pass
    import tomllib

    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as file:
            return tomllib.load(file)["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="The PixVerse Discord bot. Without a command it runs the bot; settings come from the"
                    " environment or .env (see .env.example). SIGTERM or SIGINT stops it: exit code 0;"
                    " 1 is a startup failure (one line in the log), 2 a settings error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROJECT} {version()}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    copy = commands.add_parser(
        "copy-to-postgres",
        help="copy a SQLite database into the empty PostgreSQL database of DATABASE_URL",
        description="Copies accounts, API tokens and jobs from a SQLite database into the empty PostgreSQL"
                    " database named by DATABASE_URL, with the same TOKEN_ENCRYPTION_KEY, then compares the"
                    " counts. A non-empty target is refused. Stop the bot first.",
    )
    copy.add_argument("--from", dest="source", required=True, type=Path, metavar="SQLITE_FILE",
                      help="the SQLite database (the bot's DATABASE_PATH, for example data/pixverse.db)")
    check = commands.add_parser(
        "healthcheck",
        help="ask the running bot's GET /healthz: exit 0 when healthy, 1 otherwise",
        description="Asks GET /healthz of the bot running with these settings (HTTP_HOST, HTTP_PORT; the"
                    " loopback when HTTP_HOST is 0.0.0.0 or ::) and exits 0 on 200, else 1 with one line"
                    " saying why. Reads only the HTTP settings: no DISCORD_TOKEN needed. With HTTP_PORT=0"
                    " (the API off) there is nothing to ask: it says so and exits 0.",
    )
    check.add_argument("--timeout", type=float, default=HEALTHCHECK_TIMEOUT_SECONDS, metavar="SECONDS",
                       help=f"how long to wait for the answer (default {HEALTHCHECK_TIMEOUT_SECONDS:g})")
    return parser.parse_args(argv)


def copy_to_postgres(settings: Settings, source: Path) -> int:
    from bot.store.postgres.copy import copy_to_postgres as copy
    from bot.store.postgres.database import describe_url

    if settings.database_url is None:
        print("DATABASE_URL must name the PostgreSQL database to copy into (postgresql://user:password@host:5432/"
              "dbname)", file=sys.stderr)
        return EXIT_CONFIG
    key = settings.token_encryption_key
    key_file = source.with_name(source.name + ".key")
    try:
        copied = asyncio.run(copy(source, settings.database_url.get_secret_value(), key.get_secret_value(),
                                  pool_size=2))
    except StartupError as exc:
        log.critical("%s", exc)
        return EXIT_CONFIG if exc.lasting else EXIT_STARTUP
    except Exception as exc:  # a row the target refuses, the server lost: one line, nothing kept
        log.critical("The copy failed and nothing was kept in PostgreSQL: %s: %s", type(exc).__name__, reason(exc))
        return EXIT_STARTUP
    log.info("Copied %s into %s: %s", source, describe_url(settings.database_url.get_secret_value()),
             ", ".join(f"{count} {table}" for table, count in copied.items()))
    if key_file.exists():
        log.info("Keep %s's key: every bot process on PostgreSQL needs it as TOKEN_ENCRYPTION_KEY", key_file)
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    if arguments.command == "healthcheck":
        return healthcheck(arguments.timeout)
    if arguments.command is not None:
        return _main(arguments)
    # Until the event loop takes the signals over (run), SIGTERM stops as SIGINT does: nothing
    # is open yet, so that is a clean stop too, exit code 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _main(arguments)
    except KeyboardInterrupt:
        return 0


def _main(arguments: argparse.Namespace) -> int:
    from bot.logs import setup_logging

    # The copy never connects to Discord: it needs no bot token.
    overrides = {"discord_token": "not-used-by-the-copy"} if arguments.command == "copy-to-postgres" else {}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(
        settings.log_level,
        secrets=[
            settings.discord_token.get_secret_value(),
            settings.token_encryption_key.get_secret_value() if settings.token_encryption_key else None,
            settings.database_url.get_secret_value() if settings.database_url else None,
        ],
        log_format=settings.log_format,
    )
    if arguments.command == "copy-to-postgres":
        return copy_to_postgres(settings, arguments.source)
    try:
        return asyncio.run(run(settings))
    except StartupError as exc:
        log.critical("%s", exc)
        return EXIT_CONFIG if exc.lasting else EXIT_STARTUP
    except Exception:
        # Through the logging set up above, not Python's own traceback on stderr: masked (secrets,
        # URLs with tokens) and in LOG_FORMAT's shape. Exit 1: a restart may not hit it again.
        log.critical("Stopped by an unexpected error", exc_info=True)
        return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
