"""``python -m bot`` with a database or key it cannot use: one line naming the file and the reason,
and never a process left hanging (a restart policy must see the failure). Exit code 2 when no restart
can help (a file or a key must change: restart policies leave 2 alone), 1 when one may (a lock)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.store.sqlite import database as db
from bot.accounts.crypto import TokenCipher
from bot.store.sqlite.accounts import AccountRepository
from tests.conftest import TOKEN
from tests.e2e.conftest import CHANNEL_ID, GUILD_ID
from tests.e2e.test_process_e2e import bot_env, finish, start_process

# A bot that hangs instead of exiting fails here, not by blocking the suite.
EXIT_WITHIN = 30


def critical_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " CRITICAL " in line]


async def run_to_exit(env: dict[str, str], cwd: Path, command: list[str] | None = None) -> tuple[int, str]:
    if command is None:
        process = await start_process(env, cwd)
    else:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    try:
        return await finish(process, timeout=EXIT_WITHIN)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the bot did not exit within {EXIT_WITHIN} s")


async def make_database_with_a_token(path: Path, key: bytes) -> None:
    opened = await db.Database.open(path)
    await AccountRepository(opened, TokenCipher(key)).upsert(
        guild_id=str(GUILD_ID), channel_id=str(CHANNEL_ID), token=TOKEN, discord_user_id="1", max_jobs=1
    )
    await opened.close()


async def test_a_file_that_is_not_a_database_exits_2_with_one_line(fake, tmp_path):
    database = tmp_path / "pixverse.db"
    database.write_bytes(b"this is not SQLite" * 500)
    code, stderr = await run_to_exit(bot_env(fake, database), tmp_path)
    assert code == 2
    assert critical_lines(stderr) == [
        line for line in stderr.splitlines()
        if f"CRITICAL bot: Cannot open the database {database}: file is not a database" in line
    ]
    assert len(critical_lines(stderr)) == 1
    assert "Traceback" not in stderr


def _read_only_command(folder: Path) -> list[str] | None:
    """Runs the bot with ``folder`` read-only: a private read-only bind mount when root (root
    ignores permission bits), else the permission bits themselves."""
    if os.geteuid() != 0:
        return None
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("running as root without unshare: no way to make a folder read-only for the bot")
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and this sandbox refuses a private bind mount: {probe.stderr.decode().strip()}")
    return [unshare, "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$1" -m bot', str(folder), sys.executable]


async def test_a_read_only_database_exits_2_naming_the_reason(fake, tmp_path):
    folder = tmp_path / "data"
    database = folder / "pixverse.db"
    await make_database_with_a_token(database, key := Fernet.generate_key())
    command = _read_only_command(folder)
    if command is None:
        database.chmod(0o400)
        folder.chmod(0o500)
    try:
        env = bot_env(fake, database, TOKEN_ENCRYPTION_KEY=key.decode())
        code, stderr = await run_to_exit(env, tmp_path, command)
    finally:
        folder.chmod(0o700)
        database.chmod(0o600)
    assert code == 2
    reason = "read-only file system" if command else "permission denied"
    lines = critical_lines(stderr)
    assert len(lines) == 1 and f"Cannot open the database {database}: {reason}" in lines[0], stderr
    assert "Traceback" not in stderr


async def test_a_database_locked_by_another_process_exits_1_after_the_busy_timeout(fake, tmp_path):
    database = tmp_path / "pixverse.db"
    opened = await db.Database.open(database)
    await opened.close()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, stderr = await run_to_exit(bot_env(fake, database), tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1
    lines = critical_lines(stderr)
    assert len(lines) == 1 and f"Cannot open the database {database}: database is locked" in lines[0], stderr
    assert "Traceback" not in stderr


async def test_a_key_file_others_can_read_stops_the_bot(fake, tmp_path):
    database = tmp_path / "data" / "pixverse.db"
    key_file = tmp_path / "data" / "pixverse.db.key"
    key_file.parent.mkdir()
    key = Fernet.generate_key().decode()
    key_file.write_text(key + "\n")
    key_file.chmod(0o644)
    code, stderr = await run_to_exit(bot_env(fake, database), tmp_path)
    assert code == 2
    lines = critical_lines(stderr)
    assert lines and lines[0].endswith(
        f"Token key file {key_file} is readable by other users (mode 0644); run: chmod 600 {key_file}"
    )
    assert len(lines) == 1 and key not in stderr


async def test_a_copied_database_without_its_key_gets_no_new_key_file(fake, tmp_path):
    database = tmp_path / "data" / "pixverse.db"
    await make_database_with_a_token(database, Fernet.generate_key())
    code, stderr = await run_to_exit(bot_env(fake, database), tmp_path)
    assert code == 2
    lines = critical_lines(stderr)
    assert len(lines) == 1 and lines[0].endswith(
        "The database holds tokens but their key is not here: set TOKEN_ENCRYPTION_KEY to the key they were "
        f"saved with, or restore {database}.key"
    )
    assert not Path(f"{database}.key").exists()


async def test_files_the_bot_creates_are_private(fake, tmp_path):
    folder = tmp_path / "data"
    database = folder / "pixverse.db"
    process = await start_process(bot_env(fake, database), tmp_path)
    try:
        await fake.wait_for_identify(timeout=20)
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    finally:
        process.terminate()
    code, stderr = await finish(process)
    assert code == 0, stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert modes == {"pixverse.db": 0o600, "pixverse.db-wal": 0o600, "pixverse.db-shm": 0o600,
                     "pixverse.db.key": 0o600}
