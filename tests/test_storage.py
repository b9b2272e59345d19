"""Migrations, encryption at rest, the key check."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.fernet import Fernet

from bot import db
from bot.accounts.crypto import TokenCipher, load_or_create_key
from bot.accounts.repository import AccountRepository, verify_cipher
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
    await AccountRepository(conn, cipher).upsert(
        guild_id=GUILD, channel_id=CHANNEL, token=TOKEN, discord_user_id="1", max_jobs=2
    )
    await db.close(conn)

    extra = db.Migration(9999, "9999_test_extra", "CREATE TABLE later_feature (id INTEGER PRIMARY KEY);")
    conn = await db.connect(path)
    try:
        assert await db.migrate(conn, migrations + [extra]) == [m.version for m in migrations[1:]] + [9999]
        assert (await AccountRepository(conn, cipher).get(GUILD, CHANNEL)).max_jobs == 2
    finally:
        await db.close(conn)


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
    conn = await db.connect(path)
    await db.migrate(conn)
    await AccountRepository(conn, cipher).upsert(
        guild_id=GUILD, channel_id=CHANNEL, token=TOKEN, discord_user_id="1", max_jobs=2
    )
    # Read the WAL while the connection is open, before any checkpoint folds it in.
    wal = path.with_name(path.name + "-wal")
    files = [path.read_bytes()] + ([wal.read_bytes()] if wal.exists() else [])
    await db.close(conn)
    files.append(path.read_bytes())
    assert len(files[-1]) > 0
    for content in files:
        assert TOKEN.encode() not in content
        assert TOKEN[:-4].encode() not in content
    assert not wal.exists()


async def test_key_check_refuses_another_key(conn, cipher):
    assert await verify_cipher(conn, cipher)
    assert await verify_cipher(conn, cipher)
    assert not await verify_cipher(conn, TokenCipher(Fernet.generate_key()))


async def test_key_check_on_a_database_with_tokens_but_no_check_row(conn, cipher):
    await AccountRepository(conn, cipher).upsert(
        guild_id=GUILD, channel_id=CHANNEL, token=TOKEN, discord_user_id="1", max_jobs=2
    )
    assert not await verify_cipher(conn, TokenCipher(Fernet.generate_key()))
    assert await verify_cipher(conn, cipher)


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
