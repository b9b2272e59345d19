"""The running bot on a disk that fills up: run by tests/e2e/test_full_disk.py inside ``unshare -m``.

Mounts a small tmpfs (private to this process's mount namespace) at ``--mount``, starts the real
bot against the fake Discord with its database there, fills the file system to the last byte,
then asks what a member and an HTTP client see; frees the space and asks again. Prints one JSON
line of observations; the test asserts them.

    unshare -m python -m tests.processes.full_disk_worker --mount DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess

import aiohttp
from cryptography.fernet import Fernet

from tests.conftest import TOKEN
from tests.e2e.conftest import (
    ADMIN_ID, BOT_TOKEN, CHANNEL_ID, GUILD_ID, MANAGE_GUILD, ACCOUNT_USER_ID, make_settings, start_bot, stop_bot,
)
from tests.e2e.fake_discord import FakeDiscord
from tests.e2e.test_http_api import api_token, free_port
from tests.processes.common import worker_logging


def fill(path: str) -> None:
    """Writes ``path`` until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


async def run(mount: str) -> dict:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], check=True)
    fake = FakeDiscord(bot_token=BOT_TOKEN)
    fake.add_guild(GUILD_ID, name="Studio", channel_ids=[CHANNEL_ID])
    fake.add_user_token(TOKEN, user_id=ACCOUNT_USER_ID, username="pixverse-one")
    await fake.start()
    port = free_port()

    class _Dir:  # make_settings puts the database under <tmp_path>/data
        def __truediv__(self, other):
            from pathlib import Path
            return Path(mount) / other

    settings = make_settings(_Dir(), fake, http_port=port, token_encryption_key=Fernet.generate_key().decode())
    bot, task = await start_bot(settings, fake)
    seen: dict = {}
    base = f"http://127.0.0.1:{port}"
    body = {"discord": TOKEN, "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 3}
    try:
        token = await api_token(fake, GUILD_ID, CHANNEL_ID)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            async def call(method: str, path: str, payload=None):
                async with session.request(method, base + path, json=payload, headers=headers) as response:
                    text = await response.text()
                    return [response.status, json.loads(text) if text else None]

            seen["healthz_before"] = await call("GET", "/healthz")
            fill(os.path.join(mount, "filler"))
            seen["post_when_full"] = await call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body)
            seen["healthz_when_full"] = await call("GET", "/healthz")
            result = await fake.invoke("pixverse-api-token", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID,
                                       user_id=ADMIN_ID, permissions=MANAGE_GUILD)
            seen["slash_when_full"] = [result.content, result.ephemeral]
            seen["list_when_full"] = await call("GET", "/v1/pixverse/account")
            os.remove(os.path.join(mount, "filler"))
            seen["healthz_after"] = await call("GET", "/healthz")
            seen["post_after"] = await call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body)
            seen["list_after"] = await call("GET", "/v1/pixverse/account")
    finally:
        await stop_bot(bot, task)
        await fake.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mount", required=True)
    args = parser.parse_args()
    worker_logging()
    print(json.dumps(asyncio.run(run(args.mount))), flush=True)


if __name__ == "__main__":
    main()
