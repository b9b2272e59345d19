"""What the worker processes and the tests that start them share."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "TEST_TOKEN_ENCRYPTION_KEY"  # the test's Fernet key, passed to workers by environment
BODY = {"prompt": "a red fox in the snow", "style": "Realistic"}
MEMBER = "950000000000000001"
ASKED_IN = "960000000000000001"


def worker_env(key: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env[KEY_ENV] = key
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start_worker(module: str, args: list[str], key: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"tests.processes.{module}", *args,
        cwd=str(ROOT), env=worker_env(key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


def worker_logging() -> None:
    # Warnings and errors only: a worker's stderr is shown when its test fails.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(process)d %(name)s %(levelname)s %(message)s")


class NoDiscord:
    """The Core's view of Discord in a worker: no gateway, no channel, no history."""

    async def channel_visible(self, guild_id: str, channel_id: str) -> bool | None:
        return None

    def gateway_problem(self) -> str | None:
        return "no gateway in a worker"

    async def read_history(self, channel_id: str, after: int):
        return
        yield
