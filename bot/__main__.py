"""``python -m bot``: settings, logging, run; a startup problem is one line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import discord
from pydantic import ValidationError

from bot.errors import StartupError
from bot.logs import setup_logging
from bot.settings import Settings

log = logging.getLogger("bot")

EXIT_CONFIG = 2
EXIT_STARTUP = 1


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
        else:
            problems.append(f"{name}: {error['msg']}")
    return "Configuration error: " + "; ".join(problems)


async def run(settings: Settings) -> int:
    from bot.discord_bot import PixverseBot

    bot = PixverseBot(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with bot:
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            stopper.cancel()
            runner.result()  # raises the reason the bot stopped
            return 0
        log.info("Shutting down")
        await bot.close()
        await runner
    log.info("Stopped cleanly")
    return 0


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="The PixVerse Discord bot. Without a command it runs the bot; settings come from the"
                    " environment or .env (see .env.example).",
    )
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
        return EXIT_STARTUP
    except Exception as exc:  # a row the target refuses, the server lost: one line, nothing kept
        log.critical("The copy failed and nothing was kept in PostgreSQL: %s: %s", type(exc).__name__,
                     str(exc).splitlines()[0] if str(exc) else "")
        return EXIT_STARTUP
    log.info("Copied %s into %s: %s", source, describe_url(settings.database_url.get_secret_value()),
             ", ".join(f"{count} {table}" for table, count in copied.items()))
    if key_file.exists():
        log.info("Keep %s's key: every bot process on PostgreSQL needs it as TOKEN_ENCRYPTION_KEY", key_file)
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
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
    )
    if arguments.command == "copy-to-postgres":
        return copy_to_postgres(settings, arguments.source)
    try:
        return asyncio.run(run(settings))
    except StartupError as exc:
        log.critical("%s", exc)
    except discord.LoginFailure:
        log.critical("Discord rejected DISCORD_TOKEN: check the bot token in the Developer Portal")
    except discord.PrivilegedIntentsRequired:
        log.critical("Discord refused an intent the bot needs: enable it in the Developer Portal (Bot page)")
    except (OSError, discord.GatewayNotFound, discord.HTTPException) as exc:
        log.critical("Could not start: %s", exc)
    return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
