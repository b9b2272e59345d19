"""The Discord backend's attribution of PixVerse messages, through the real dispatcher."""

from __future__ import annotations

import random

import pytest

from bot.dispatch.models import JobStatus, Verb
from tests.dispatch_support import Listener, discord_backend_dispatcher

G, A1 = "900000000000000001", "900000000000000011"
ACCOUNT_USER = "700000000000000001"
PIXVERSE = "950000000000000001"


def message(message_id: str, content: str, *, attachments=0, metadata=True, reference=None) -> dict:
    return {
        "id": message_id,
        "channel_id": A1,
        "guild_id": G,
        "author": {"id": PIXVERSE, "bot": True},
        "content": content,
        "type": 19 if reference else 0,
        "flags": 0,
        "attachments": [
            {"id": f"{message_id}{n}", "url": f"https://cdn.example/{message_id}-{n}.mp4", "filename": f"v{n}.mp4",
             "size": 10, "content_type": "video/mp4"}
            for n in range(attachments)
        ],
        "embeds": [],
        "components": [{"type": 1, "components": [{"type": 2, "style": 2, "label": "U1", "custom_id": f"u1-{message_id}"}]}]
        if attachments else [],
        "interaction_metadata": {"user": {"id": ACCOUNT_USER}} if metadata else None,
        "message_reference": {"message_id": reference} if reference else None,
    }


def waiting(mid: str, prompt: str) -> dict:
    return message(mid, f"<@{ACCOUNT_USER}> (prompt: {prompt} style: Realistic aspect-ratio: 16:9) (Waiting to start)")


def final(mid: str, prompt: str, reference=None) -> dict:
    return message(mid, f"<@{ACCOUNT_USER}> (prompt: {prompt} style: Realistic aspect-ratio: 16:9) Author: <@{ACCOUNT_USER}>",
                   attachments=4, metadata=False, reference=reference)


@pytest.fixture
async def setup(database, repository):
    await repository.upsert(guild_id=G, channel_id=A1, token="token-for-account-one", discord_user_id=ACCOUNT_USER,
                            max_jobs=3)
    backend, dispatcher = discord_backend_dispatcher(database, repository, application_id=PIXVERSE,
                                                     listener=Listener())

    async def submit_only(job, token):  # the user-token side is not under test here
        return None

    backend.submit = submit_only
    yield dispatcher, backend
    await dispatcher.close()


async def create(dispatcher, prompt: str):
    placed = await dispatcher.submit(guild_id=G, requester_id="5", request_channel_id="6", verb=Verb.CREATE,
                                     body={"prompt": prompt, "style": "Realistic"})
    await dispatcher.wait_idle()
    return placed.job.job_id


async def test_an_edit_of_a_finished_message_never_completes_another_job(setup):
    dispatcher, backend = setup
    first = await create(dispatcher, "a red fox")
    await backend.observe(waiting("1001", "a red fox"))
    await backend.observe(final("1002", "a red fox"))
    assert (await dispatcher.get(first, G)).status is JobStatus.COMPLETED
    second = await create(dispatcher, "a red fox")
    # Discord re-sends the first job's final message as an edit (embeds processed…).
    await backend.observe(final("1002", "a red fox"))
    assert (await dispatcher.get(second, G)).status is JobStatus.CREATED
    # The second job's own messages still reach it.
    await backend.observe(waiting("1003", "a red fox"))
    await backend.observe(final("1004", "a red fox"))
    done = await dispatcher.get(second, G)
    assert done.status is JobStatus.COMPLETED and done.message_id == "1004"


async def test_prompts_match_by_equality_not_containment(setup):
    dispatcher, backend = setup
    cat = await create(dispatcher, "cat")
    await backend.observe(waiting("2001", "black cat"))
    assert (await dispatcher.get(cat, G)).status is JobStatus.CREATED


async def test_a_reply_to_a_known_result_is_never_taken_by_a_prompt_match(setup):
    dispatcher, backend = setup
    first = await create(dispatcher, "a red fox")
    await backend.observe(waiting("3001", "a red fox"))
    await backend.observe(final("3002", "a red fox"))
    second = await create(dispatcher, "a red fox")
    # PixVerse answers a button pressed elsewhere (no follow-up job of ours is open).
    await backend.observe(final("3003", "a red fox", reference="3002"))
    assert (await dispatcher.get(second, G)).status is JobStatus.CREATED
    assert (await dispatcher.get(first, G)).status is JobStatus.COMPLETED


async def test_messages_of_other_authors_or_users_are_ignored(setup):
    dispatcher, backend = setup
    job = await create(dispatcher, "a red fox")
    foreign = {**waiting("4001", "a red fox"), "author": {"id": "123", "bot": True}}
    other_user = {**waiting("4002", "a red fox"), "interaction_metadata": {"user": {"id": "42"}},
                  "content": "<@42> (prompt: a red fox style: Realistic aspect-ratio: 16:9) (Waiting to start)"}
    for msg in (foreign, other_user, {**waiting("4003", "a red fox"), "guild_id": None}):
        await backend.observe(msg)
    assert (await dispatcher.get(job, G)).status is JobStatus.CREATED


async def test_news_from_an_account_a_job_has_left_changes_nothing(setup, database, repository):
    dispatcher, backend = setup
    job_id = await create(dispatcher, "a red fox")
    await backend.observe(waiting("5001", "a red fox"))
    # The job moves to another account (its first account was refused).
    other = "900000000000000012"
    await repository.upsert(guild_id=G, channel_id=other, token="token-for-account-two", discord_user_id="7002",
                            max_jobs=1)
    job = await dispatcher.get(job_id, G)
    moved, _ = await dispatcher.jobs.requeue(job, now=1.0, owner=dispatcher.owner, rng=random.Random(1),
                                             error="moved")
    assert moved.account_channel_id == other
    # A late edit of its old message on the first account must not end it.
    await backend.observe(final("5001", "a red fox"))
    still = await dispatcher.get(job_id, G)
    assert still.status is JobStatus.CREATED and still.account_channel_id == other


async def test_history_read_after_a_restart_starts_from_this_machines_time_of_the_job(database, repository):
    """A job's times are the database server's clock; Discord's snowflakes are nearest this machine's.
    With the database's clock 10 minutes ahead, the history is still read from 5 s before the job
    was sent by this machine's clock, not 10 minutes later (which would skip PixVerse's first message)."""
    from bot.dispatch.backends.discord import snowflake_at
    from bot.dispatch.clock import SharedClock

    here = {"now": 1_800_000_000.0}

    async def database_clock() -> float:
        return here["now"] + 600

    clock = SharedClock(database_clock, local=lambda: here["now"], monotonic=lambda: here["now"])
    await clock.sync()
    await repository.upsert(guild_id=G, channel_id=A1, token="token-for-account-one", discord_user_id=ACCOUNT_USER,
                            max_jobs=3)
    backend, dispatcher = discord_backend_dispatcher(database, repository, application_id=PIXVERSE,
                                                     listener=Listener(), clock=clock)

    async def submit_only(job, token):
        return None

    read_after: list[int] = []

    async def history(channel_id: str, after: int):
        read_after.append(after)
        return
        yield

    backend.submit, backend.read_history = submit_only, history
    try:
        job = await dispatcher.get(await create(dispatcher, "a red fox"), G)
        assert job.submitted_at == 1_800_000_600.0  # the database's time
        await backend.resume([job], "token-for-account-one")
        assert read_after == [snowflake_at(1_800_000_000.0 - 5)]
    finally:
        await dispatcher.close()
