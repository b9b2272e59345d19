"""Migrations, encryption at rest, the key check."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
from cryptography.fernet import Fernet

from bot.store.sqlite import database as db
from bot.accounts.crypto import TokenCipher, load_or_create_key
from bot.store.key_check import verify_cipher
from bot.store.sqlite.accounts import AccountRepository
from bot.errors import StartupError
from tests.conftest import CHANNEL, GUILD, TOKEN


async def test_fresh_database_gets_every_migration(tmp_path):
    conn = await db.connect(tmp_path / "fresh.db")
    try:
        applied = await db.migrate(conn)
        expected = [m.version for m in db.load_migrations()]
        assert applied == expected
        assert await db.schema_version(conn) == expected[-1]
        # A second start applies nothing.
        assert await db.migrate(conn) == []
        async with conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"
    finally:
        await db.close(conn)


async def test_older_database_is_upgraded_and_keeps_its_rows(tmp_path, cipher):
    path = tmp_path / "old.db"
    migrations = db.load_migrations()
    conn = await db.connect(path)
    await db.migrate(conn, migrations[:1])
    # A row as version 1 wrote it (before accounts had rotation columns).
    await conn.execute(
        "INSERT INTO accounts (channel_id, guild_id, token_encrypted, token_hash, token_last4, discord_user_id,"
        " max_jobs, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (CHANNEL, GUILD, cipher.encrypt(TOKEN), cipher.fingerprint(TOKEN), TOKEN[-4:], "1", 2, "t", "t"),
    )
    await db.close(conn)

    extra = db.Migration(9999, "9999_test_extra", "CREATE TABLE later_feature (id INTEGER PRIMARY KEY);")
    conn = await db.connect(path)
    try:
        assert await db.migrate(conn, migrations + [extra]) == [m.version for m in migrations[1:]] + [9999]
        stored = await AccountRepository(db.Database(conn), cipher).get(GUILD, CHANNEL)
        assert (stored.max_jobs, stored.in_rotation, stored.error) == (2, True, None)
    finally:
        await db.close(conn)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_a_database_migrated_by_a_newer_bot_is_told_and_still_opens(engine, tmp_path, caplog):
    """An upgrade undone, or a process left behind: the older bot warns, once, that it does not
    know the newest migration, and runs."""
    import contextlib
    import logging

    from bot.store.migrations import Migration, load_migrations, migrations_dir

    migrations = load_migrations(migrations_dir(engine if engine == "sqlite" else "postgres"))
    later = Migration(migrations[-1].version + 1, "later_feature", "CREATE TABLE later_feature (id INTEGER);")
    async with contextlib.AsyncExitStack() as stack:
        if engine == "sqlite":
            opener = lambda **kw: db.Database.open(tmp_path / "newer.db", **kw)  # noqa: E731
        else:
            from bot.store.postgres.database import Database as PostgresDatabase
            from tests.postgres_support import fresh_schema

            url, schema = await stack.enter_async_context(fresh_schema())
            opener = lambda **kw: PostgresDatabase.open(url, pool_size=1, server_settings={"search_path": schema}, **kw)  # noqa: E731
        await (await opener(migrations=migrations + [later])).close()
        caplog.set_level(logging.WARNING, logger="bot.store.migrations")
        opened = await opener()
        try:
            await opened.ping()
        finally:
            await opened.close()
    known = migrations[-1].version
    assert [r.getMessage() for r in caplog.records] == [
        f"The database's schema is at version {known + 1} and this version of the bot knows up to {known}: a newer"
        " version of the bot migrated it. Upgrade this process; an older version may fail on a newer"
        " schema (to go back, restore the backup made before upgrading)"]


async def test_a_failing_migration_leaves_nothing_half_applied(tmp_path):
    conn = await db.connect(tmp_path / "broken.db")
    try:
        good = db.load_migrations()
        await db.migrate(conn, good)
        broken = db.Migration(9998, "9998_broken", "CREATE TABLE half (id INTEGER);\nINSERT INTO nowhere VALUES (1);")
        with pytest.raises(Exception):
            await db.migrate(conn, good + [broken])
        async with conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'") as cur:
            assert await cur.fetchone() is None
        assert await db.schema_version(conn) == good[-1].version
    finally:
        await db.close(conn)


async def test_token_is_not_in_the_database_file_or_wal(tmp_path, cipher):
    path = tmp_path / "secret.db"
    database = await db.Database.open(path)
    await AccountRepository(database, cipher).upsert(
        guild_id=GUILD, channel_id=CHANNEL, token=TOKEN, discord_user_id="1", max_jobs=2
    )
    # Read the WAL while the connection is open, before any checkpoint folds it in.
    wal = path.with_name(path.name + "-wal")
    assert wal.exists()
    files = [path.read_bytes(), wal.read_bytes()]
    await database.close()
    files.append(path.read_bytes())
    assert len(files[-1]) > 0
    for content in files:
        assert TOKEN.encode() not in content
        assert TOKEN[:-4].encode() not in content
    assert not wal.exists()


async def test_key_check_refuses_another_key(database, cipher):
    assert await verify_cipher(database, cipher)
    assert await verify_cipher(database, cipher)
    assert not await verify_cipher(database, TokenCipher(Fernet.generate_key()))


async def test_key_check_on_a_database_with_tokens_but_no_check_row(database, cipher):
    await AccountRepository(database, cipher).upsert(
        guild_id=GUILD, channel_id=CHANNEL, token=TOKEN, discord_user_id="1", max_jobs=2
    )
    assert not await verify_cipher(database, TokenCipher(Fernet.generate_key()))
    assert await verify_cipher(database, cipher)


def test_generated_key_file_is_private_and_reused(tmp_path):
    key_file = tmp_path / "data" / "pixverse.db.key"
    key = load_or_create_key(None, key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_or_create_key(None, key_file) == key
    TokenCipher(key)  # a usable Fernet key


def test_configured_key_wins_and_no_file_is_written(tmp_path, key):
    key_file = tmp_path / "k.key"
    assert load_or_create_key(key, key_file) == key
    assert not key_file.exists()


def test_invalid_key_is_a_startup_error():
    with pytest.raises(StartupError, match="TOKEN_ENCRYPTION_KEY is not a valid Fernet key"):
        TokenCipher("not-a-key")


def test_fingerprint_is_keyed(cipher):
    other = TokenCipher(Fernet.generate_key())
    assert cipher.fingerprint(TOKEN) == cipher.fingerprint(TOKEN)
    assert cipher.fingerprint(TOKEN) != other.fingerprint(TOKEN)
    assert TOKEN not in cipher.fingerprint(TOKEN)


async def test_a_write_from_another_coroutine_never_joins_an_open_transaction(database):
    import asyncio

    entered = asyncio.Event()

    async def work(tx) -> None:
        await tx.execute("INSERT INTO meta (key, value) VALUES ('in-tx', '1')")
        entered.set()
        await asyncio.sleep(0.05)  # the other coroutine is now waiting to write
        raise RuntimeError("abort")

    async def rolled_back() -> None:
        await database.run(work)

    async def outside() -> None:
        await entered.wait()
        await database.set_meta("outside", "1")

    results = await asyncio.gather(rolled_back(), outside(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert await database.get_meta("in-tx") is None
    assert await database.get_meta("outside") == "1"


def test_a_missing_migrations_folder_is_an_error_not_an_empty_database(tmp_path):
    from bot.errors import StartupError

    with pytest.raises(StartupError, match="no migrations found in"):
        db.load_migrations(tmp_path / "nowhere")


async def test_migration_5_gives_every_old_job_its_one_state(tmp_path):
    """Jobs as schema 4 kept them (seven columns) become one state each, nothing lost: running
    jobs keep their account and live owner, a dead owner becomes none, attributions stay."""
    path = tmp_path / "v4.db"
    migrations = db.load_migrations()
    conn = await db.connect(path)
    await db.migrate(conn, [m for m in migrations if m.version <= 4])
    await conn.execute("INSERT INTO processes (owner, heartbeat_at) VALUES ('alive', 1.0)")
    old = ("INSERT INTO jobs (job_id, guild_id, account_channel_id, account_user_id, max_jobs, requester_id,"
           " request_channel_id, verb, params, status, slot_held, queued, owner, created_at, updated_at, submitted_at,"
           " pixverse_open) VALUES (?, 'g', ?, ?, ?, 'm', 'c', 'create', '{}', ?, ?, ?, ?, 1.0, 2.0, ?, ?)")
    rows = {
        "waiting": (None, None, None, "created", 0, 1, None, None, 0),
        "placed": ("a", "u", 2, "created", 1, 0, "alive", None, 0),
        "submitted": ("a", "u", 2, "progress", 1, 0, "dead", 1.5, 1),
        "done": ("a", "u", 2, "completed", 0, 0, "alive", 1.5, 1),
    }
    for job_id, values in rows.items():
        await conn.execute(old, (job_id, *values))
    await conn.execute("INSERT INTO pixverse_messages (message_id, job_id) VALUES ('m1', 'submitted')")
    await db.close(conn)

    conn = await db.connect(path)
    try:
        assert await db.migrate(conn, migrations) == [m.version for m in migrations if m.version > 4]
        async with conn.execute("SELECT job_id, state, slot_held, queued, owner, account_channel_id, status,"
                                " version FROM jobs ORDER BY seq") as cursor:
            got = [tuple(r) for r in await cursor.fetchall()]
        assert got == [
            ("waiting", "waiting", 0, 1, None, None, "created", 1),
            ("placed", "placed", 1, 0, "alive", "a", "created", 1),
            ("submitted", "submitted", 1, 0, None, "a", "progress", 1),  # its process is gone: recovery's
            ("done", "done", 0, 0, None, "a", "completed", 1),  # ended: no owner
        ]
        async with conn.execute("SELECT job_id FROM pixverse_messages WHERE message_id = 'm1'") as cursor:
            assert [tuple(r) for r in await cursor.fetchall()] == [("submitted",)]
        # The schema now refuses what the old one let through: a waiting job with an account.
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            await conn.execute("UPDATE jobs SET account_channel_id = 'a' WHERE job_id = 'waiting'")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await conn.execute("UPDATE jobs SET owner = 'nobody' WHERE job_id = 'placed'")
    finally:
        await db.close(conn)


def test_only_what_a_restart_cannot_change_is_a_lasting_open_failure(tmp_path):
    """Exit code 2 (restart policies give up) for a file that is not a database or may not be written;
    1 (tried again) for a lock, a full disk, an I/O error or a network mount away for a moment."""
    import errno

    path = tmp_path / "bot.db"
    lasting = [sqlite3.DatabaseError("file is not a database"), sqlite3.DatabaseError("database disk image is malformed"),
               sqlite3.OperationalError("attempt to write a readonly database"),
               PermissionError(errno.EACCES, "Permission denied"), OSError(errno.EROFS, "Read-only file system")]
    passing = [sqlite3.OperationalError("database is locked"), sqlite3.OperationalError("disk I/O error"),
               sqlite3.OperationalError("database or disk is full"), sqlite3.OperationalError("unable to open database file"),
               OSError(errno.EIO, "Input/output error"), OSError(errno.ESTALE, "Stale file handle"),
               OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EMFILE, "Too many open files")]
    assert [db.open_error(path, exc).lasting for exc in lasting] == [True] * len(lasting)
    assert [db.open_error(path, exc).lasting for exc in passing] == [False] * len(passing)
    assert str(db.open_error(path, OSError(errno.EIO, "Input/output error"))) == (
        f"Cannot open the database {path}: input/output error")


def test_a_key_file_that_cannot_be_read_is_one_lasting_line(tmp_path):
    key_file = tmp_path / "bot.db.key"
    key_file.mkdir(mode=0o700)
    with pytest.raises(StartupError) as folder:
        load_or_create_key(None, key_file)
    assert (str(folder.value), folder.value.lasting) == (
        f"Cannot read token key file {key_file}: is a directory; restore it or set TOKEN_ENCRYPTION_KEY", True)
    key_file.rmdir()
    key_file.write_bytes("clé".encode())
    key_file.chmod(0o600)
    with pytest.raises(StartupError, match="not a key's text; restore it"):
        load_or_create_key(None, key_file)
