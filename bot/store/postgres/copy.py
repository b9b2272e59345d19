"""``python -m bot copy-to-postgres --from data/pixverse.db``: a SQLite database into an empty PostgreSQL one.

Everything the bot keeps is copied in one PostgreSQL transaction (all of it or nothing): the
accounts (their tokens stay encrypted: the key must be the one the SQLite database used, and it
is checked first), the API tokens (hashes), the jobs with their PixVerse message attributions,
and the database's facts (key check, synced commands). Jobs that were running name processes of
the old database; they are copied with no owner, and the bot process of their server's shard
takes them over when it starts, as after a restart. The counts are compared afterwards. A
target that already holds accounts, tokens or jobs is refused: nothing is merged or overwritten.
"""

from __future__ import annotations

from pathlib import Path

from bot.accounts.crypto import TokenCipher
from bot.errors import StartupError
from bot.store.key_check import verify_cipher

# Table -> columns copied, in order. Generated columns (slot_held, queued) are left to the target.
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "accounts": ("channel_id", "guild_id", "token_encrypted", "token_hash", "token_last4", "discord_user_id",
                 "max_jobs", "created_at", "updated_at", "in_rotation", "error", "error_details",
                 "consecutive_failures"),
    "api_tokens": ("token_hash", "guild_id", "created_by", "created_at", "revoked_at"),
    "jobs": ("seq", "job_id", "guild_id", "state", "version", "status", "account_channel_id", "account_user_id",
             "max_jobs", "requester_id", "request_channel_id", "verb", "params", "parent_job_id", "owner",
             "placement_attempts", "created_at", "updated_at", "submitted_at", "pixverse_open", "message_id",
             "progress", "content", "attachments", "buttons", "error", "error_details", "message_timestamp", "embeds",
             "status_message_id", "status_message_in_channel", "final_pending"),
    "pixverse_messages": ("message_id", "job_id"),
    "job_images": ("job_id", "param", "filename", "data"),
    "server_settings": ("guild_id", "buttons", "alerts_channel_id", "updated_at"),
}
BOOLEANS = {"in_rotation", "pixverse_open", "status_message_in_channel", "final_pending"}


class CopyRefused(StartupError):
    """The copy cannot be made as asked; printed as one line. Exit code 2: running it again as it is
    cannot pass (another source, target or key is needed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, lasting=True)


async def copy_to_postgres(source: Path, url: str, key: str, *, pool_size: int = 2,
                           server_settings: dict[str, str] | None = None) -> dict[str, int]:
    """Copies ``source`` into the PostgreSQL database at ``url``; returns the rows copied per table."""
    from bot.store.postgres.database import Database as PostgresDatabase
    from bot.store.sqlite.database import Database as SQLiteDatabase

    if not source.is_file():
        raise CopyRefused(f"No SQLite database at {source}: name it with --from (the bot's DATABASE_PATH)")
    cipher = TokenCipher(key)
    sqlite = await SQLiteDatabase.open(source)  # brought to the current schema first
    try:
        if not await verify_cipher(sqlite, cipher):
            raise CopyRefused(
                f"TOKEN_ENCRYPTION_KEY cannot decrypt the tokens stored in {source}: set it to the key that"
                " database used (its key file, if the bot made one, is beside it: "
                f"{source.with_name(source.name + '.key')})"
            )
        rows = {table: await sqlite.fetchall(f"SELECT {', '.join(columns)} FROM {table}")
                for table, columns in TABLES.items()}
    finally:
        await sqlite.close()

    # One transaction converts every row as it goes (a large database's may idle past the bot's
    # minute between statements, and one table's rows take longer than the bot's statement limit):
    # no idle or statement limit for the copy.
    target = await PostgresDatabase.open(url, pool_size=pool_size, command_timeout=None, server_settings={
        "idle_in_transaction_session_timeout": "0", **(server_settings or {})})
    try:
        async with target.transaction() as conn:
            held = {table: await conn.fetchval(f"SELECT COUNT(*) FROM {table}")
                    for table in ("accounts", "api_tokens", "jobs")}
            if any(held.values()):
                found = ", ".join(f"{count} {table}" for table, count in held.items() if count)
                raise CopyRefused(f"The PostgreSQL database {target.name} is not empty ({found}): copy into an"
                                  " empty database only")
            await conn.execute("DELETE FROM meta")  # a fresh target's own key check gives way to the source's
            for table, columns in TABLES.items():
                owner = columns.index("owner") if "owner" in columns else None
                booleans = [i for i, column in enumerate(columns) if column in BOOLEANS]
                records = []
                for row in rows[table]:
                    values = list(row)
                    for i in booleans:
                        values[i] = bool(values[i])
                    if owner is not None:
                        values[owner] = None  # the old database's processes: the new ones take over
                    records.append(tuple(values))
                if records:
                    await conn.copy_records_to_table(table, records=records, columns=list(columns))
            # New jobs continue the submission order after the copied ones.
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('jobs', 'seq'), GREATEST((SELECT MAX(seq) FROM jobs), 1))"
            )
            copied = {table: await conn.fetchval(f"SELECT COUNT(*) FROM {table}") for table in TABLES}
            expected = {table: len(rows[table]) for table in TABLES}
            if copied != expected:
                raise CopyRefused(f"The copy does not match its source ({copied} copied, {expected} read);"
                                  " nothing was kept")
        return copied
    finally:
        await target.close()
