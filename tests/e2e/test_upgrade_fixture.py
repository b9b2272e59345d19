"""A database made by the bot at schema version 3 (tests/fixtures/schema3) opens with today's code,
every account, API token and job intact and usable through the slash commands and the HTTP API.

The fixture was made once with tests/fixtures/make_schema3_fixture.py; it must never be remade
with newer code, or this test would stop checking the upgrade from what installs really have.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKEN, TOKEN_2
from tests.e2e.conftest import (
    ACCOUNT_2_USER_ID, ACCOUNT_USER_ID, ADMIN_ID, CHANNEL_2_ID, CHANNEL_ID, GUILD_ID, MANAGE_GUILD, make_settings,
    start_bot, stop_bot,
)
from tests.e2e.test_http_api import free_port

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema3"


async def test_a_schema_3_database_is_intact_and_usable(tmp_path, fake, restore_discord_endpoints):
    facts = json.loads((FIXTURE / "fixture.json").read_text())
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in ("pixverse.db", "pixverse.db.key"):
        shutil.copyfile(FIXTURE / name, data / name)
        (data / name).chmod(0o600)  # git keeps no file modes; the bot refuses a key others can read
    fake.add_user_token(TOKEN, user_id=ACCOUNT_USER_ID, username="pixverse-one")
    fake.add_user_token(TOKEN_2, user_id=ACCOUNT_2_USER_ID, username="pixverse-two")
    fake.add_pixverse(step_delay=0.01)
    port = free_port()
    bot, task = await start_bot(make_settings(tmp_path, fake, http_port=port, token_encryption_key=None), fake)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {facts['api_token']}"}) as session:
            async def get(path: str):
                async with session.get(base + path) as response:
                    return response.status, await response.json()

            # The API token still authenticates; both accounts are there, tokens masked.
            assert await get("/v1/pixverse/account") == (200, {
                str(CHANNEL_ID): {"discord": "…1234", "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 2},
                str(CHANNEL_2_ID): {"discord": "…5678", "server": str(GUILD_ID), "channel": str(CHANNEL_2_ID),
                                    "maxJobs": 3},
            })
            # The finished jobs read as they did, field for field.
            for name, job in facts["jobs"].items():
                status, shown = await get(f"/v1/pixverse/jobs/?jobid={job['jobid']}")
                # useapi's code of the job: 422 moderated, 408 timed out, 500 failed, else 200; the
                # embeds of PixVerse's message were not kept before schema 6 (timestamp: absent).
                code = {"moderated": 422, "failed": 408 if job.get("error") == "Timed out" else 500}.get(job["status"], 200)
                assert (status, shown) == (200, {**job, "code": code, "embeds": []}), name
            assert await get("/v1/pixverse/jobs") == (200, [])

            # The stored tokens still decrypt and run: a new job completes. A button of the old
            # completed job is accepted on that job's account (its stored message and buttons read
            # back; the fake PixVerse of this run never saw that message, so it goes no further).
            async with session.post(base + "/v1/pixverse/create", json={"prompt": "a new fox", "style": "Anime"}) as r:
                new = await r.json()
                assert r.status == 200, new
            async with session.post(base + "/v1/pixverse/button",
                                    json={"jobid": facts["jobs"]["completed"]["jobid"], "button": "U1"}) as r:
                pressed = await r.json()
                assert r.status == 200, pressed
            for _ in range(200):
                status, shown = await get(f"/v1/pixverse/jobs/?jobid={new['jobid']}")
                if shown["status"] in ("completed", "failed", "moderated", "cancelled"):
                    break
                await asyncio.sleep(0.05)
            assert shown["status"] == "completed", (shown["error"], shown.get("errorDetails"))
            assert (pressed["verb"], pressed["channel"]) == ("pixverse-button", facts["jobs"]["completed"]["channel"])

        # And through the slash commands. The fixture's fingerprint says they are registered (as
        # Discord keeps them across a bot's upgrade); this fake Discord is new, so tell it again.
        await bot.tree.sync()
        listing = await fake.invoke("pixverse-accounts", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID,
                                    user_id=ADMIN_ID, permissions=MANAGE_GUILD)
        assert str(CHANNEL_ID) in listing.content and str(CHANNEL_2_ID) in listing.content
        assert TOKEN not in listing.content and TOKEN_2 not in listing.content
        shown = await fake.invoke("pixverse-job", {"jobid": facts["jobs"]["moderated"]["jobid"]},
                                  guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID)
        assert shown.content == f"moderated · jobid: {facts['jobs']['moderated']['jobid']}"
        assert shown.messages[-1]["embeds"][0]["description"] == "**moderated**"
    finally:
        await stop_bot(bot, task)

    # What the upgrade made of the rows (migration 0005): every job's one state, timestamps REAL.
    import sqlite3

    conn = sqlite3.connect(data / "pixverse.db")
    try:
        states = dict(conn.execute("SELECT job_id, state FROM jobs"))
        for name in ("completed", "moderated"):
            assert states[facts["jobs"][name]["jobid"]] == "done"
        assert set(states.values()) == {"done"}  # the bot stopped with nothing running
        for table, column in (("accounts", "created_at"), ("accounts", "updated_at"), ("api_tokens", "created_at"),
                              ("jobs", "created_at"), ("processes", "heartbeat_at"),
                              ("schema_migrations", "applied_at")):
            assert {row[0] for row in conn.execute(f"SELECT DISTINCT typeof({column}) FROM {table}")} <= {"real"}, table
        created = conn.execute("SELECT MIN(created_at) FROM accounts").fetchone()[0]
        assert 1_790_000_000 < created < 1_800_000_000  # 2026, as the fixture was made, not a day number
        # Migration 0008: the old jobs have no status message (NULL, not in a channel), read as Job
        # fields None and False; the schema refuses "in a channel" without a message there too.
        from bot.dispatch.models import job_from_row

        conn.row_factory = sqlite3.Row
        old_ids = [job["jobid"] for job in facts["jobs"].values()]
        old_jobs = [job_from_row(row) for row in conn.execute(
            f"SELECT * FROM jobs WHERE job_id IN ({', '.join('?' * len(old_ids))})", old_ids)]
        assert len(old_jobs) == len(old_ids)
        assert {(job.status_message_id, job.status_message_in_channel) for job in old_jobs} == {(None, False)}
        assert all(job.status_message_in_channel is False for job in old_jobs)
        with pytest.raises(sqlite3.IntegrityError, match="jobs_status_message_in_channel_needs_id"):
            conn.execute("UPDATE jobs SET status_message_in_channel = 1 WHERE job_id = ?", (old_ids[0],))
        conn.rollback()
        # Migration 0010: the jobs that ended before it have no end left to show, so no process
        # tells their members the end again; and only an ended job can have one.
        assert {row["final_pending"] for row in conn.execute(
            f"SELECT final_pending FROM jobs WHERE job_id IN ({', '.join('?' * len(old_ids))})", old_ids)} == {0}
        conn.row_factory = None
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
