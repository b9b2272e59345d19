"""``python -m bot copy-to-postgres --from …``: a SQLite database into an empty PostgreSQL one."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from bot.dispatch.images import Image
from bot.dispatch.models import JobState, JobStatus, Verb
from bot.store import NewJob
from bot.store.postgres.copy import CopyRefused, copy_to_postgres
from bot.store.postgres.database import Database as PostgresDatabase
from bot.store.postgres.database import describe_url
from bot.store.sqlite.database import Database as SQLiteDatabase
from tests.postgres_support import fresh_schema, url_with_schema

ROOT = Path(__file__).resolve().parents[1]
GUILD = "111111111111111111"
A, B = "333333333333333333", "444444444444444444"
OWNER = "old-host:1:42:aaaa"
NOW = 1_800_000_000.0
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


async def sqlite_with_everything(path: Path, key: str) -> dict:
    """A SQLite database as a running bot leaves it: accounts, tokens, finished, waiting and running jobs."""
    db = await SQLiteDatabase.open(path)
    stores = db.stores(TokenCipher(key))
    from bot.store.key_check import verify_cipher
    assert await verify_cipher(db, TokenCipher(key))  # the key check a bot writes at its first start
    await stores.accounts.upsert(guild_id=GUILD, channel_id=A, token="token-a-xxxxxxxxxxxx1111",
                                 discord_user_id="700000000000000001", max_jobs=1)
    await stores.accounts.upsert(guild_id=GUILD, channel_id=B, token="token-b-xxxxxxxxxxxx2222",
                                 discord_user_id="700000000000000002", max_jobs=1)
    await stores.accounts.set_rotation(GUILD, B, in_rotation=False, error="Token rejected")
    await stores.servers.set(GUILD, buttons="everyone")
    live = await stores.tokens.create(GUILD, "admin")
    revoked = await stores.tokens.create("222222222222222222", "admin")
    await stores.tokens.revoke_all("222222222222222222")
    jobs = stores.jobs
    await jobs.heartbeat(OWNER, NOW)
    rng = random.Random(1)
    new = NewJob(GUILD, "900000000000000001", "900000000000000002", Verb.CREATE, {"prompt": "a fox", "style": "Anime"})
    done = (await jobs.place(new, now=NOW, owner=OWNER, queue_size=5, rng=rng)).job
    assert await jobs.mark_submitted(done, NOW, owner=OWNER)
    await jobs.remember_message("500000000000000001", done.job_id)
    await jobs.release(done.job_id, JobStatus.COMPLETED, now=NOW + 1,
                       fields={"pixverse_open": False, "attachments": '[{"url": "https://cdn.example/v.mp4"}]'})
    # Its status message, moved to the channel and recorded after it ended (the final edit).
    assert await jobs.set_status_message(done.job_id, "600000000000000001", in_channel=True)
    running = (await jobs.place(new, now=NOW + 2, owner=OWNER, queue_size=5, rng=rng)).job
    assert await jobs.mark_submitted(running, NOW + 2, owner=OWNER)
    assert await jobs.set_status_message(running.job_id, "600000000000000002", in_channel=False)
    # A waiting animate job: its image goes with it.
    animate = NewJob(GUILD, "900000000000000001", "900000000000000002", Verb.ANIMATE,
                     {"image": {"filename": "cat.png"}}, images={"image": Image("cat.png", PNG)})
    waiting = (await jobs.place(animate, now=NOW + 3, owner=OWNER, queue_size=5, rng=rng)).job
    assert waiting.state is JobState.WAITING
    await db.close()
    return {"live": live, "revoked": revoked, "done": done.job_id, "running": running.job_id,
            "waiting": waiting.job_id}


async def test_everything_is_copied_and_readable_with_the_same_key(tmp_path):
    key = Fernet.generate_key().decode()
    made = await sqlite_with_everything(tmp_path / "pixverse.db", key)
    async with fresh_schema() as (url, schema):
        copied = await copy_to_postgres(tmp_path / "pixverse.db", url, key, server_settings={"search_path": schema})
        assert copied == {"meta": 1, "accounts": 2, "api_tokens": 2, "jobs": 3, "pixverse_messages": 1,
                          "job_images": 1, "server_settings": 1}
        db = await PostgresDatabase.open(url, pool_size=2, server_settings={"search_path": schema})
        try:
            stores = db.stores(TokenCipher(key))
            from bot.store.key_check import verify_cipher
            assert await verify_cipher(db, TokenCipher(key))
            assert not await verify_cipher(db, TokenCipher(Fernet.generate_key()))
            accounts = await stores.accounts.list(GUILD)
            assert [(a.channel_id, a.max_jobs, a.in_rotation, a.error) for a in accounts] == [
                (A, 1, True, None), (B, 1, False, "Token rejected")]
            assert await stores.accounts.decrypt_token(GUILD, A) == "token-a-xxxxxxxxxxxx1111"
            assert (await stores.accounts.find_by_token("token-b-xxxxxxxxxxxx2222")).channel_id == B
            assert await stores.tokens.guild_of(made["live"]) == GUILD
            assert await stores.tokens.guild_of(made["revoked"]) is None
            done = await stores.jobs.get(made["done"])
            assert (done.status, done.state, done.attachments) == (
                JobStatus.COMPLETED, JobState.DONE, [{"url": "https://cdn.example/v.mp4"}])
            assert await stores.jobs.job_of_message("500000000000000001") == made["done"]
            # Each job's status message, and whether it is in the channel (a boolean again).
            shown = {job.job_id: (job.status_message_id, job.status_message_in_channel)
                     for job in await stores.jobs.of_member(GUILD, "900000000000000001")}
            assert shown == {made["done"]: ("600000000000000001", True),
                             made["running"]: ("600000000000000002", False),
                             made["waiting"]: (None, False)}
            assert all(type(job.status_message_in_channel) is bool
                       for job in await stores.jobs.of_member(GUILD, "900000000000000001"))
            assert await db.fetchval("SELECT COUNT(*) FROM jobs WHERE status_message_in_channel") == 1
            # The running job names no process of the new database: the bot takes it over.
            running = await stores.jobs.get(made["running"])
            assert (running.state, running.owner) == (JobState.SUBMITTED, None)
            assert [j.job_id for j in await stores.jobs.orphaned([])] == [made["running"]]
            assert [j.job_id for j in await stores.jobs.waiting(GUILD)] == [made["waiting"]]
            assert (await stores.jobs.images(made["waiting"]))["image"].data == PNG
            assert (await stores.servers.get(GUILD)).buttons == "everyone"
            # New jobs follow the copied ones in submission order.
            await stores.jobs.heartbeat("new", NOW)
            await stores.accounts.set_rotation(GUILD, B, in_rotation=True)
            later = await stores.jobs.place(
                NewJob(GUILD, "9", "9", Verb.CREATE, {"prompt": "x"}), now=NOW + 9, owner="new", queue_size=5,
                rng=random.Random(2))
            assert later.job.seq > (await stores.jobs.get(made["waiting"])).seq
        finally:
            await db.close()


async def test_a_target_that_holds_anything_is_refused_and_kept_as_it_was(tmp_path):
    key = Fernet.generate_key().decode()
    await sqlite_with_everything(tmp_path / "pixverse.db", key)
    async with fresh_schema() as (url, schema):
        await copy_to_postgres(tmp_path / "pixverse.db", url, key, server_settings={"search_path": schema})
        with pytest.raises(CopyRefused) as info:
            await copy_to_postgres(tmp_path / "pixverse.db", url, key, server_settings={"search_path": schema})
        assert str(info.value) == (f"The PostgreSQL database {describe_url(url)} is not empty"
                                   " (2 accounts, 2 api_tokens, 3 jobs): copy into an empty database only")
        db = await PostgresDatabase.open(url, pool_size=1, server_settings={"search_path": schema})
        try:  # kept as it was: nothing added, nothing removed
            assert [await db.fetchval(f"SELECT COUNT(*) FROM {table}") for table in
                    ("meta", "accounts", "api_tokens", "jobs", "pixverse_messages")] == [1, 2, 2, 3, 1]
        finally:
            await db.close()


async def test_the_wrong_key_is_refused_before_anything_is_written(tmp_path):
    await sqlite_with_everything(tmp_path / "pixverse.db", Fernet.generate_key().decode())
    async with fresh_schema() as (url, schema):
        with pytest.raises(CopyRefused) as info:
            await copy_to_postgres(tmp_path / "pixverse.db", url, Fernet.generate_key().decode(),
                                   server_settings={"search_path": schema})
        assert str(info.value) == (
            f"TOKEN_ENCRYPTION_KEY cannot decrypt the tokens stored in {tmp_path / 'pixverse.db'}: set it to the key"
            f" that database used (its key file, if the bot made one, is beside it: {tmp_path / 'pixverse.db.key'})"
        )
        import asyncpg
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:  # the target was not even touched: no table was made in it
            assert await conn.fetchval("SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1", schema) == 0
        finally:
            await conn.close()


async def test_the_command_as_an_admin_runs_it(tmp_path):
    key = Fernet.generate_key().decode()
    await sqlite_with_everything(tmp_path / "pixverse.db", key)
    async with fresh_schema() as (url, schema):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "DATABASE_", "TOKEN_", "LOG_"))}
        # No DISCORD_TOKEN: the copy never connects to Discord.
        env.update(PYTHONPATH=str(ROOT), TOKEN_ENCRYPTION_KEY=key, DATABASE_URL=url_with_schema(url, schema))
        result = subprocess.run([sys.executable, "-m", "bot", "copy-to-postgres", "--from", "pixverse.db"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Copied pixverse.db into postgresql://" in result.stderr
        assert ": 1 meta, 2 accounts, 2 api_tokens, 3 jobs, 1 pixverse_messages" in result.stderr
        assert key not in result.stderr
        again = subprocess.run([sys.executable, "-m", "bot", "copy-to-postgres", "--from", "pixverse.db"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr
