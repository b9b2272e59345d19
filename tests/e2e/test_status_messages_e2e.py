"""One status message per job, edited in place, as a member sees it (the real bot against the
fake Discord, which checks Discord's embed and component limits and rate-limits message writes
per channel)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from bot.dispatch.catalogue import PROMPT_LIMIT
from tests.conftest import TOKEN
from tests.e2e.conftest import (
    CHANNEL_ID, GUILD_ID, MANAGE_GUILD, MEMBER_ID, make_settings, start_bot, stop_bot,
)
from tests.e2e.status_support import (
    buttons_of, fields_of, reply_of, settled, the_jobs_channel_message, word_of,
)
from tests.e2e.test_jobs_e2e import create, job_id_of, member, save_account, until

BAR = re.compile(r"^[▰▱]{10} \d{1,3}%$")
STATE_ORDER = ["created", "waiting", "started", "progress", "completed"]
JOB_EVERY = 3.0  # at most one edit per job this often, besides its changes of state


@pytest.fixture
def pixverse(fake):
    fake.add_pixverse(step_delay=0.02)
    return fake


def words(versions: list[dict]) -> list[str]:
    return [word_of(v["message"]["content"]) for v in versions]


def assert_paced(versions: list[dict]) -> None:
    """Between two writes that do not change the state word, at least JOB_EVERY seconds."""
    for before, after in zip(versions, versions[1:]):
        if word_of(before["message"]["content"]) == word_of(after["message"]["content"]):
            assert after["at"] - before["at"] >= JOB_EVERY - 0.05, (before["message"]["content"],
                                                                   after["message"]["content"])



async def a_job_held_at_pixverse(fake, prompt: str):
    """A member's job on a fresh account, sent to PixVerse, which holds it: its command's result and id."""
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    fake.pixverse_hold = True
    result = await create(fake, prompt=prompt)
    job_id = job_id_of(result.content)
    await fake.wait_for_pixverse_held(1)
    return result, job_id

async def test_one_job_is_one_message_edited_from_created_to_its_result(bot, pixverse):
    fake = pixverse
    fake.pixverse_step_delay = 0.8
    fake.pixverse_progress_steps = [12, 37, 64, 88]
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    result = await create(fake, prompt="a lighthouse in a storm", aspect_ratio="9:16")
    shown = await settled(result)
    job_id = job_id_of(shown["content"])
    versions = fake.message_versions(result.original_message_id)
    assert {v["message"]["id"] for v in versions} == {result.original_message_id}
    assert [v["route"] for v in versions] == ["callback"] + ["webhook_edit"] * (len(versions) - 1)
    seen = words(versions)
    assert seen[0] == "created" and seen[-1] == "completed" and "started" in seen
    assert seen == sorted(seen, key=STATE_ORDER.index)  # never back
    progress = [v["message"] for v in versions if word_of(v["message"]["content"]) == "progress"]
    assert progress, seen
    first, bar = progress[0]["content"].splitlines()
    assert first == f"progress 12% · jobid: {job_id}" and bar == "▰▱▱▱▱▱▱▱▱▱ 12%"
    assert progress[0]["embeds"][0]["description"] == "**progress 12%**\n▰▱▱▱▱▱▱▱▱▱ 12%"
    assert_paced(versions)
    # Each message: the verb and prompt as title, the parameters, the job id; no account channel.
    for version in versions:
        embed = version["message"]["embeds"][0]
        assert embed["title"] == "create · a lighthouse in a storm"
        assert fields_of(version["message"])["Job id"] == f"`{job_id}`"
        assert fields_of(version["message"])["aspect_ratio"] == "9:16"
    # The result: the first video in the content, a Link button per video, grouped result buttons;
    # the member mentioned in the final edit only.
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    urls = [a["url"] for a in job.attachments]
    assert shown["content"] == f"<@{MEMBER_ID}> completed · jobid: {job_id}\n{urls[0]}"
    assert buttons_of(shown)[3] == ["Video 1", "Video 2", "Video 3", "Video 4"]
    assert [[c["style"] for c in row["components"]] for row in shown["components"]][3] == [5, 5, 5, 5]
    assert [[m["id"] for m in v["message"]["mentions"]] for v in versions] == [[]] * (len(versions) - 1) + [
        [str(MEMBER_ID)]]
    allowed = versions[-1]["body"]["allowed_mentions"]  # Discord may mention that member only
    assert allowed["parse"] == [] and [str(user) for user in allowed["users"]] == [str(MEMBER_ID)]
    assert shown["embeds"][0]["color"] == 0x57F287
    assert job.status_message_id == result.original_message_id and job.status_message_in_channel is False

    # The end shown is recorded by the write itself (no later look tells it again).
    async def recorded() -> bool:
        return await bot.core.dispatcher.jobs.final_not_shown(ended_before=time.time() + 1, ended_after=0) == []

    await until(recorded)


async def test_the_member_is_notified_of_the_end_once_by_a_new_message(bot, pixverse):
    """Discord notifies a mention only in a new message, never in an edit: the final edit names the
    member, and one short followup of their command notifies them. A cancelled job tells no one."""
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    result = await create(fake, prompt="a lighthouse in a storm")
    job_id = job_id_of((await settled(result))["content"])

    async def notified() -> bool:
        return bool(fake.notified(MEMBER_ID))

    await until(notified)
    [notice] = fake.notified(MEMBER_ID)  # the command's reply and its edits notified no one
    [version] = fake.message_versions(notice)
    assert version["route"] == "followup" and not version["message"]["flags"] & 64  # seen in the channel
    assert version["message"]["content"] == f"<@{MEMBER_ID}> completed · jobid: {job_id} · your video is ready"
    assert [str(user) for user in version["body"]["allowed_mentions"]["users"]] == [str(MEMBER_ID)]
    assert version["body"]["allowed_mentions"]["parse"] == []
    assert version["at"] > fake.message_versions(result.original_message_id)[-1]["at"]  # after the end shows

    fake.pixverse_hold = True
    held = await create(fake, prompt="a calm lake")
    await fake.wait_for_pixverse_held(1)
    cancelled_id = job_id_of(held.content)
    await member(fake, "pixverse-cancel", {"jobid": cancelled_id})
    assert word_of((await settled(held))["content"]) == "cancelled"
    await asyncio.sleep(0.5)
    assert fake.notified(MEMBER_ID) == [notice]
    fake.pixverse_release()


async def test_the_end_is_recorded_when_a_later_look_finds_it_shown_already(bot, pixverse, caplog):
    """Recording the end failed once (the database busy): the next look records it, with no new
    write to Discord (the message shows the end already)."""
    fake = pixverse
    dispatcher = bot.core.dispatcher
    record = dispatcher.final_shown
    failures: list[str] = []

    async def fails_once(job_id: str) -> None:
        if not failures:
            failures.append(job_id)
            raise RuntimeError("database is locked")
        await record(job_id)

    dispatcher.final_shown = fails_once
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    result = await create(fake, prompt="a heron in the reeds")
    shown = await settled(result)
    job_id = job_id_of(shown["content"])
    async def tried() -> bool:
        return failures == [job_id]

    await until(tried)
    assert f"Could not record that the end of job {job_id} is shown" in caplog.text
    pending = await dispatcher.jobs.final_not_shown(ended_before=time.time() + 1, ended_after=0)
    assert [job.job_id for job in pending] == [job_id]
    writes = len(fake.message_versions(result.original_message_id))

    dispatcher.show_grace = 0.0
    await dispatcher.show_ends()

    async def recorded() -> bool:
        return await dispatcher.jobs.final_not_shown(ended_before=time.time() + 1, ended_after=0) == []

    await until(recorded)
    assert len(fake.message_versions(result.original_message_id)) == writes
    assert not [m for m in fake.channel_messages.get(CHANNEL_ID, []) if job_id in m["content"]]


async def test_fifty_jobs_progressing_in_one_channel_all_reach_their_final_state(
        tmp_path, fake, restore_discord_endpoints):
    guild, request_channel = 860000000000000001, 860000000000000002
    accounts = [860000000000000010 + n for n in range(5)]
    fake.add_guild(guild, name="Busy", channel_ids=[request_channel, *accounts])
    for n in range(5):
        fake.add_user_token(f"busy-account-token-{n}-" + "z" * 30, user_id=870000000000000001 + n)
    fake.add_pixverse(step_delay=0.6)
    fake.pixverse_progress_steps = [10, 30, 50, 70, 90]
    # Discord answers 429 past 20 writes a second in the channel; the bot allows itself 30, so
    # some of its edits meet a 429 and must still arrive.
    fake.message_rate_limit = (20, 1.0)
    settings = make_settings(tmp_path, fake, status_channel_edits=30, status_channel_window_seconds=1.0)
    bot, task = await start_bot(settings, fake)
    try:
        for n, channel in enumerate(accounts):
            saved = await fake.invoke("pixverse-account", {
                "discord": f"busy-account-token-{n}-" + "z" * 30, "server": str(guild), "channel": str(channel),
                "maxjobs": 10}, guild_id=guild, channel_id=channel, user_id=MEMBER_ID, permissions=MANAGE_GUILD)
            assert saved.content.startswith("Saved"), saved.content
        results = await asyncio.gather(*(
            fake.invoke("pixverse-create", {"prompt": f"fox number {n}", "style": "Anime"}, guild_id=guild,
                        channel_id=request_channel, user_id=MEMBER_ID, timeout=30)
            for n in range(50)))
        assert [word_of(r.messages[0]["content"]) for r in results] == ["created"] * 50
        finals = [await settled(result, timeout=90) for result in results]
        assert [word_of(f["content"]) for f in finals] == ["completed"] * 50
        assert fake.rate_limited, "no write met a 429: the test did not test it"
        writes = 0
        for result in results:
            versions = fake.message_versions(result.original_message_id)
            writes += len(versions) - 1
            assert words(versions)[-1] == "completed"  # a start passed over by its progress is fine
            assert_paced(versions)
        # Each 429 was waited out and the write went through: no loop of refusals.
        assert len(fake.rate_limited) < writes
        assert bot.get_cog("PixVerse jobs").board.pending() == 0
    finally:
        await stop_bot(bot, task)


async def test_a_job_that_waits_has_one_message_that_shows_its_place_in_the_queue(
        tmp_path, pixverse, restore_discord_endpoints):
    fake = pixverse
    bot, task = await start_bot(make_settings(tmp_path, fake, pixverse_queue_size=5), fake)
    try:
        await save_account(fake, TOKEN, CHANNEL_ID, 1)
        fake.pixverse_hold = True
        running = await create(fake, prompt="first")
        await fake.wait_for_pixverse_held(1)
        second = await create(fake, prompt="second")
        third = await create(fake, prompt="third")
        assert second.messages[0]["content"] == f"waiting · position 1 of 1 · jobid: {job_id_of(second.content)}"
        assert third.messages[0]["content"] == f"waiting · position 2 of 2 · jobid: {job_id_of(third.content)}"
        assert fields_of(third.messages[0])["Job id"] == f"`{job_id_of(third.content)}`"
        # The one before it learns the queue grew.
        await settled(second, words={"waiting"})
        deadline = asyncio.get_running_loop().time() + 10
        while "of 2" not in reply_of(second)["content"]:
            assert asyncio.get_running_loop().time() < deadline, reply_of(second)
            await asyncio.sleep(0.02)
        # The first ends, the second takes its slot (and is held at PixVerse): the third moves up.
        fake.pixverse_release(1)
        assert word_of((await settled(running))["content"]) == "completed"
        deadline = asyncio.get_running_loop().time() + 10
        while not reply_of(third)["content"].startswith("waiting · position 1 of 1 · jobid: "):
            assert asyncio.get_running_loop().time() < deadline, reply_of(third)
            await asyncio.sleep(0.02)
        fake.pixverse_hold = False
        fake.pixverse_release()
        for result in (second, third):
            assert word_of((await settled(result, timeout=20))["content"]) == "completed"
        seen = [v["message"]["content"].split(" · jobid")[0]
                for v in fake.message_versions(third.original_message_id)]
        assert seen[:2] == ["waiting · position 2 of 2", "waiting · position 1 of 1"]
        # One message each, no channel posts.
        assert [m for m in fake.channel_messages.get(CHANNEL_ID, [])
                if m["author"]["id"] == str(fake.bot_user_id)] == []
    finally:
        await stop_bot(bot, task)


async def test_past_the_interaction_window_the_job_goes_on_in_one_channel_message(
        tmp_path, pixverse, restore_discord_endpoints):
    fake = pixverse
    bot, task = await start_bot(make_settings(tmp_path, fake, interaction_window_seconds=1), fake)
    try:
        result, job_id = await a_job_held_at_pixverse(fake, "a long wait")
        await asyncio.sleep(1.2)  # the window is over
        fake.pixverse_hold = False
        fake.pixverse_release()
        posted = await the_jobs_channel_message(fake, CHANNEL_ID, job_id)  # one, edited: never one per state
        assert posted["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {job_id}\n")
        versions = fake.message_versions(posted["id"])
        assert versions[0]["route"] == "channel_post" and {v["route"] for v in versions[1:]} <= {"channel_edit"}
        assert [m["id"] for m in versions[0]["message"]["mentions"]] == [str(MEMBER_ID)]  # it told the member
        # The reply was not edited past the window.
        assert all(v["at"] < versions[0]["at"] for v in fake.message_versions(result.original_message_id))

        assert fake.notified(MEMBER_ID) == [posted["id"]]  # posted at the end: it told the member, once

        async def kept() -> bool:  # stored once Discord answered the post
            job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
            return (job.status_message_id, job.status_message_in_channel) == (posted["id"], True)

        await until(kept)
    finally:
        await stop_bot(bot, task)


async def test_a_channel_message_edited_to_the_end_is_followed_by_a_reply_that_tells_the_member(
        tmp_path, pixverse, restore_discord_endpoints):
    """Past the window the job's channel message is posted at its next state (which notifies the
    member) and edited from then on; the end, an edit, notifies no one: a reply to it does."""
    fake = pixverse
    fake.pixverse_step_delay = 0.8  # progress 12% at 1.6 s: past the window, then more
    bot, task = await start_bot(make_settings(tmp_path, fake, interaction_window_seconds=1), fake)
    try:
        await save_account(fake, TOKEN, CHANNEL_ID, 1)
        result = await create(fake, prompt="a slow sunrise")
        job_id = job_id_of(result.content)
        posted = await the_jobs_channel_message(fake, CHANNEL_ID, job_id)
        versions = fake.message_versions(posted["id"])
        assert versions[0]["route"] == "channel_post" and word_of(versions[0]["message"]["content"]) == "progress"
        assert word_of(versions[-1]["message"]["content"]) == "completed" and versions[-1]["route"] == "channel_edit"

        async def told() -> bool:
            return len(fake.notified(MEMBER_ID)) == 2

        await until(told)
        first, notice = fake.notified(MEMBER_ID)
        [reply] = fake.message_versions(notice)
        assert first == posted["id"] and reply["route"] == "channel_post" and reply["at"] > versions[-1]["at"]
        assert reply["message"]["content"] == f"<@{MEMBER_ID}> completed · jobid: {job_id} · your video is ready"
        assert reply["message"]["message_reference"]["message_id"] == posted["id"]
        assert [m["id"] for m in reply["message"]["mentions"]] == [str(MEMBER_ID)]
    finally:
        await stop_bot(bot, task)


async def test_any_prompt_and_reason_fit_discords_limits(bot, pixverse):
    fake = pixverse
    fake.pixverse_moderated_words.add("forbidden")
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    prompt = ("forbidden " + "*_~`|>" * 400)[:PROMPT_LIMIT]
    result = await create(fake, prompt=prompt)
    final = await settled(result)
    assert word_of(final["content"]) == "moderated" and final["embeds"][0]["color"] == 0xED4245
    [embed] = final["embeds"]
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert fields_of(final)["Reason"].startswith("Banned prompt\n")
    # Every write was accepted: the fake answers 400 to anything past Discord's limits.
    assert [r for r in fake.requests if r.status == 400 and "/messages" in r.path] == []
    shown = await member(fake, "pixverse-job", {"jobid": job_id_of(final["content"])})
    assert shown.content.startswith("moderated · jobid: ")


async def test_pixverse_jobs_lists_a_members_own_last_ten_finished_included(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    ids = []
    for n in range(11):
        ids.append(job_id_of((await settled(await create(fake, prompt=f"fox {n}")))["content"]))
    other = await member(fake, "pixverse-jobs", {"mine": True}, user_id=MEMBER_ID + 100)
    assert other.ephemeral and other.content == "You have no PixVerse job in this server"
    mine = await member(fake, "pixverse-jobs", {"mine": True})
    assert mine.ephemeral and mine.content == "Your last PixVerse jobs in this server: 10"
    lines = mine.messages[-1]["embeds"][0]["description"].splitlines()
    assert lines == [f"`{job_id}` · **completed** · create · <@{MEMBER_ID}>" for job_id in reversed(ids[1:])]


async def test_an_interaction_token_that_expired_early_moves_the_job_to_a_channel_message(bot, pixverse):
    fake = pixverse
    result, job_id = await a_job_held_at_pixverse(fake, "the token runs out")
    fake.interaction_token_seconds = 0  # Discord answers 401 50027 from now on, whatever the bot counts
    fake.pixverse_hold = False
    fake.pixverse_release()
    posted = await the_jobs_channel_message(fake, CHANNEL_ID, job_id)
    assert posted["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {job_id}\n")
    assert any(r.status == 401 and "/webhooks/" in r.path for r in fake.requests)


async def a_job_ended_while_the_bot_was_down(tmp_path, fake, monkeypatch):
    """Settings and the result of a member's job that ended in the store while the bot was stopped,
    its message still showing it running (a crash right after the end was committed, a sweep of
    another process)."""
    import time

    import bot.dispatch.dispatcher as dispatching
    from bot.dispatch.models import JobStatus
    from bot.store.sqlite.database import Database
    from tests.dispatch_support import jobs_of

    monkeypatch.setattr(dispatching, "SHOW_GRACE_SECONDS", 0.0)  # told at once at start, not a minute later
    settings = make_settings(tmp_path, fake)
    bot, task = await start_bot(settings, fake)
    try:
        result, job_id = await a_job_held_at_pixverse(fake, "a fox at dawn")
    finally:
        await stop_bot(bot, task)
    assert word_of(reply_of(result)["content"]) in ("created", "started")  # what the member sees

    db = await Database.open(settings.database_path)
    try:
        ended = await jobs_of(db).release(job_id, JobStatus.FAILED, now=time.time(),
                                          fields={"error": "PixVerse did not answer in time"})
        assert ended.job is not None
        assert [job.job_id for job in await jobs_of(db).final_not_shown(ended_before=time.time() + 1, ended_after=0)] == [job_id]
    finally:
        await db.close()
    return settings, job_id


async def test_a_job_that_ended_while_the_bot_was_down_shows_its_end_at_the_next_start(
        tmp_path, pixverse, restore_discord_endpoints, monkeypatch):
    """The store has the end, the member's message does not: the next start tells the member, once."""
    import time

    fake = pixverse
    settings, job_id = await a_job_ended_while_the_bot_was_down(tmp_path, fake, monkeypatch)
    bot, task = await start_bot(settings, fake)
    try:
        # Past a restart the interaction's reply is not edited: one channel message names the member.
        posted = await the_jobs_channel_message(fake, CHANNEL_ID, job_id)
        assert posted["content"].startswith(f"<@{MEMBER_ID}> failed · jobid: {job_id}")
        assert [m["id"] for m in posted["mentions"]] == [str(MEMBER_ID)]

        async def recorded() -> bool:
            return await bot.core.dispatcher.jobs.final_not_shown(ended_before=time.time() + 1, ended_after=0) == []

        await until(recorded)
    finally:
        await stop_bot(bot, task)


async def test_the_end_of_a_job_whose_channel_is_gone_is_given_up_once(
        tmp_path, pixverse, restore_discord_endpoints, monkeypatch, caplog):
    """Its channel was deleted while the bot was down: Discord answers 404 Unknown Channel, which no
    later try would change, so the end is recorded as settled instead of tried every minute."""
    import time

    fake = pixverse
    settings, job_id = await a_job_ended_while_the_bot_was_down(tmp_path, fake, monkeypatch)
    del fake.guilds[GUILD_ID]["channels"][CHANNEL_ID]
    bot, task = await start_bot(settings, fake)
    try:
        async def settled_for_good() -> bool:
            return await bot.core.dispatcher.jobs.final_not_shown(ended_before=time.time() + 1, ended_after=0) == []

        await until(settled_for_good)
        assert (f"The end of job {job_id} cannot be shown in channel {CHANNEL_ID} (404 10003); not trying again"
                in caplog.text)
        assert not [m for m in fake.channel_messages.get(CHANNEL_ID, []) if job_id in m["content"]]
    finally:
        await stop_bot(bot, task)
