"""PixVerse's messages in account channels, cheap and bounded (issue 15).

* The backend knows in memory which messages it follows (``follows``: PixVerse's, in an account
  channel), the account channels kept current from the store, the account events and the jobs it sends.
* A progress edit of a running job's message is one statement (``record_message_progress``), told
  to the members exactly as ``Dispatcher.job_update`` tells it; anything else (not started yet,
  ended, moved, another user's message) takes the general path, as before.
* The jobs cog reads a channel's PixVerse messages one at a time, in order, bounded, the newest
  edit of a message replacing one still waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
from types import SimpleNamespace

import pytest

from bot.dispatch.dispatcher import PROGRESS_EVERY_SECONDS
from bot.dispatch.models import JobStatus, Verb
from tests.dispatch_support import Clock, discord_backend_dispatcher

G, A1, A2 = "900000000000000001", "900000000000000011", "900000000000000012"
ACCOUNT_USER, OTHER_USER = "700000000000000001", "700000000000000002"
PIXVERSE = "950000000000000001"
PROMPT = "a red fox"
GROUP = f"(prompt: {PROMPT} style: Realistic aspect-ratio: 16:9)"


def pixverse(message_id: str, text: str, *, edited: bool = True, user: str = ACCOUNT_USER, channel: str = A1) -> dict:
    return {
        "id": message_id, "channel_id": channel, "guild_id": G, "author": {"id": PIXVERSE, "bot": True},
        "content": f"<@{user}> {GROUP} {text}", "type": 20, "flags": 0, "attachments": [], "embeds": [],
        "components": [], "timestamp": "2027-01-15T08:00:00+00:00",
        "edited_timestamp": "2027-01-15T08:00:05+00:00" if edited else None,
        "interaction_metadata": {"user": {"id": user}},
    }


class Told:
    """A dispatcher listener: every notice, progress ones apart."""

    def __init__(self) -> None:
        self.changed: list[tuple[str, str]] = []
        self.progressed: list[tuple[str, int | None, str | None]] = []

    async def job_changed(self, job) -> None:
        self.changed.append((job.job_id, job.status.value))

    async def job_progressed(self, job) -> None:
        self.progressed.append((job.job_id, job.progress, job.content))


@pytest.fixture
async def setup(database, repository):
    await repository.upsert(guild_id=G, channel_id=A1, token="token-for-account-one", discord_user_id=ACCOUNT_USER,
                            max_jobs=3)
    told = Told()
    clock = Clock()
    backend, dispatcher = discord_backend_dispatcher(database, repository, application_id=PIXVERSE, listener=told,
                                                     clock=clock)

    async def submit_only(job, token):  # the user-token side is not under test here
        backend.channel_saved(job.account_channel_id)

    backend.submit = submit_only
    yield SimpleNamespace(dispatcher=dispatcher, backend=backend, told=told, clock=clock, db=database)
    await dispatcher.close()


def count_round_trips(db) -> dict[str, int]:
    """Counts the calls to the database thread and the reads on the loop's thread from now on."""
    counts = {"thread": 0, "loop": 0}
    for name, kind in (("fetchall", "thread"), ("execute", "thread"), ("run", "thread"), ("lookup_all", "loop")):
        original = getattr(db, name)

        def counted(*args, _original=original, _kind=kind, **kwargs):
            counts[_kind] += 1
            return _original(*args, **kwargs)

        setattr(db, name, counted)
    return counts


async def started_job(s) -> str:
    placed = await s.dispatcher.submit(guild_id=G, requester_id="5", request_channel_id="6", verb=Verb.CREATE,
                                       body={"prompt": PROMPT, "style": "Realistic"})
    await s.dispatcher.wait_idle()
    await s.backend.observe(pixverse("1001", "(Waiting to start)", edited=False))
    await s.dispatcher.wait_idle()
    return placed.job.job_id


async def test_a_progress_edit_of_a_running_job_is_one_statement_told_as_before(setup):
    s = setup
    job_id = await started_job(s)
    assert s.told.changed[-1] == (job_id, "started")
    counts = count_round_trips(s.db)
    s.clock.now += 10
    await s.backend.observe(pixverse("1001", "(37%)"))
    await s.dispatcher.wait_idle()
    assert counts == {"thread": 1, "loop": 0}
    job = await s.dispatcher.get(job_id, G)
    assert (job.status, job.progress, job.message_id, job.updated_at) == (JobStatus.PROGRESS, 37, "1001", s.clock.now)
    assert s.told.progressed == [(job_id, 37, f"<@{ACCOUNT_USER}> {GROUP} (37%)")]
    # At most one progress notice per job every PROGRESS_EVERY_SECONDS, as job_update tells them.
    s.clock.now += 1
    await s.backend.observe(pixverse("1001", "(40%)"))
    s.clock.now += PROGRESS_EVERY_SECONDS
    await s.backend.observe(pixverse("1001", "(52%)"))
    await s.dispatcher.wait_idle()
    assert [p for _, p, _ in s.told.progressed] == [37, 52]
    assert (await s.dispatcher.get(job_id, G)).progress == 52
    assert s.told.changed[-1] == (job_id, "started")  # "started" was told once


async def test_a_message_whose_job_is_not_running_goes_the_general_path_once(setup):
    s = setup
    job_id = await started_job(s)
    await s.dispatcher.cancel(job_id, guild_id=G, user_id="5", is_manager=False)
    await s.dispatcher.wait_idle()
    counts = count_round_trips(s.db)
    await s.backend.observe(pixverse("1001", "(50%)"))  # PixVerse goes on after a cancel
    general = dict(counts)
    assert general["thread"] >= 2  # the one statement, then the general path's reads
    await s.backend.observe(pixverse("1001", "(60%)"))
    assert counts["thread"] - general["thread"] < general["thread"]  # no one-statement try this time
    job = await s.dispatcher.get(job_id, G)
    assert (job.status, job.progress) == (JobStatus.CANCELLED, None)


async def test_the_first_news_of_a_created_job_is_the_general_path_s_started_notice(setup):
    s = setup
    placed = await s.dispatcher.submit(guild_id=G, requester_id="5", request_channel_id="6", verb=Verb.CREATE,
                                       body={"prompt": PROMPT, "style": "Realistic"})
    await s.dispatcher.wait_idle()
    await s.backend.observe(pixverse("2001", "(Waiting to start)"))  # first seen as an edit (a restart)
    await s.backend.observe(pixverse("2001", "(12%)"))
    await s.dispatcher.wait_idle()
    job = await s.dispatcher.get(placed.job.job_id, G)
    assert (job.status, job.progress) == (JobStatus.PROGRESS, 12)
    assert s.told.changed.count((job.job_id, "started")) == 1


async def test_messages_for_another_user_or_on_another_account_change_nothing(setup):
    s = setup
    job_id = await started_job(s)
    await s.backend.observe(pixverse("1001", "(44%)", user=OTHER_USER))  # not the account's message
    await s.backend.observe(pixverse("1001", "(45%)", channel=A2))  # not an account channel
    await s.dispatcher.wait_idle()
    assert (await s.dispatcher.get(job_id, G)).progress is None


def test_the_one_statement_reads_jobs_by_index(setup):
    """EXPLAIN QUERY PLAN of record_message_progress's statement: no scan of jobs."""
    conn = sqlite3.connect(setup.db.path)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN UPDATE jobs SET status = ?, message_id = ?, progress = COALESCE(?, progress),"
            " content = COALESCE(?, content), updated_at = ?"
            " WHERE job_id = (SELECT job_id FROM pixverse_messages WHERE message_id = ?) AND account_channel_id = ?"
            " AND state = 'submitted' AND status <> 'created' AND EXISTS (SELECT 1 FROM accounts"
            " WHERE channel_id = ? AND guild_id = ? AND discord_user_id IN (?)) RETURNING *",
            ("progress", "m", 1, "c", 0.0, "m", A1, A1, G, ACCOUNT_USER)).fetchall()
    finally:
        conn.close()
    details = [row[3] for row in plan]
    assert not any(d.startswith("SCAN jobs") or d == "SCAN accounts" for d in details), details


# --- which messages are followed -------------------------------------------------------------------


async def test_follows_pixverse_messages_in_account_channels_only(setup):
    backend = setup.backend
    message = pixverse("1", "(1%)")
    assert not backend.follows(message)  # the channels are not read yet
    await backend.refresh_channels()
    assert backend.follows(message)
    assert not backend.follows({**message, "channel_id": A2})
    assert not backend.follows({**message, "author": {"id": OTHER_USER, "bot": True}})
    assert not backend.follows({**message, "author": None})
    backend.channel_saved(A2)
    assert backend.follows({**message, "channel_id": A2})
    backend.channel_deleted(A2)
    assert not backend.follows({**message, "channel_id": A2})


async def test_a_refresh_keeps_what_was_told_while_it_read(setup, repository):
    backend = setup.backend
    read = asyncio.Event()
    channel_ids = repository.channel_ids

    async def slow_channel_ids():
        found = await channel_ids()
        await read.wait()
        return found

    repository.channel_ids = slow_channel_ids
    refresh = asyncio.create_task(backend.refresh_channels())
    await asyncio.sleep(0)
    backend.channel_saved(A2)  # saved while the refresh reads
    backend.channel_deleted(A1)  # deleted meanwhile too
    read.set()
    await refresh
    assert backend.channels == {A2}


async def test_the_channel_of_a_job_sent_to_pixverse_is_followed(setup):
    s = setup
    assert A1 not in s.backend.channels
    await s.dispatcher.submit(guild_id=G, requester_id="5", request_channel_id="6", verb=Verb.CREATE,
                              body={"prompt": PROMPT, "style": "Realistic"})
    await s.dispatcher.wait_idle()
    assert A1 in s.backend.channels


# --- the jobs cog's queue ---------------------------------------------------------------------------


@pytest.fixture
def cog(monkeypatch):
    import cogs.jobs as jobs_cog

    settings = SimpleNamespace(interaction_window_seconds=840, status_channel_edits=5, status_channel_window_seconds=5)
    cog = jobs_cog.JobsCog(SimpleNamespace(settings=settings, user=None))
    cog.read: list[tuple[str, str]] = []
    cog.release = asyncio.Event()

    async def observe(payload):
        await cog.release.wait()
        cog.read.append((payload["id"], payload["content"]))

    monkeypatch.setattr(cog, "_observe", observe)
    return cog


def raw(message_id: str, content: str, channel: str = A1) -> dict:
    return {"id": message_id, "channel_id": channel, "content": content}


async def test_a_channel_s_messages_are_read_in_order_the_newest_edit_of_each_waiting_one_wins(cog):
    cog._enqueue(raw("1", "created"), edit=False)
    await asyncio.sleep(0)  # the reader holds "1" (created) while PixVerse goes on
    for content in ("10%", "20%", "30%"):
        cog._enqueue(raw("1", content), edit=True)
    cog._enqueue(raw("2", "created"), edit=False)
    cog._enqueue(raw("2", "5%"), edit=True)
    cog._enqueue(raw("1", "40%"), edit=True)  # replaces 30%, in arrival order: after message 2
    cog._enqueue(raw("9", "other channel", channel=A2), edit=False)
    assert cog._pending_count == 4  # message 1's creation is being read
    cog.release.set()
    while cog._readers:
        await asyncio.sleep(0)
    assert [r for r in cog.read if r[0] != "9"] == [("1", "created"), ("2", "created"), ("2", "5%"), ("1", "40%")]
    assert ("9", "other channel") in cog.read
    assert cog._pending_count == 0 and cog._pending == {}


async def test_what_waits_is_bounded_and_what_is_set_aside_is_read_again_from_history(cog, monkeypatch, caplog):
    import cogs.jobs as jobs_cog

    caught_up: list[str] = []

    async def catch_up(channel):  # the channel's history read again for its open jobs
        caught_up.append(channel)
        cog.read.append(("history", channel))

    monkeypatch.setattr(cog, "_catch_up", catch_up)
    monkeypatch.setattr(jobs_cog, "PENDING_LIMIT", 3)
    for n in range(5):
        cog._enqueue(raw(str(n), "created"), edit=False)
    cog._enqueue(raw("1", "edited"), edit=True)  # a new entry: over the limit too
    cog._enqueue(raw("0", "newer"), edit=False)  # an entry still waiting takes its newest state
    assert cog._pending_count == 3 and cog._dropped == 3
    assert "set aside" in caplog.text
    cog.release.set()
    while cog._readers:
        await asyncio.sleep(0)
    # What waited is read, then the channel's history once for what was set aside.
    assert cog.read == [("1", "created"), ("2", "created"), ("0", "newer"), ("history", A1)]
    assert caught_up == [A1] and cog._overflowed == set()


async def test_unloading_drops_what_waits(cog):
    for n in range(3):
        cog._enqueue(raw(str(n), "created"), edit=False)
    await asyncio.sleep(0)
    for task in list(cog._readers.values()):
        task.cancel()
    await asyncio.sleep(0)
    assert cog._pending_count == 0 and cog._readers == {} and cog._pending == {}
