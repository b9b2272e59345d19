"""Jobs end to end: the real bot, the fake Discord, and the fake PixVerse of part 5."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.conftest import TOKEN, TOKEN_2
from tests.e2e.conftest import (
    ACCOUNT_2_USER_ID,
    ACCOUNT_USER_ID,
    ADMIN_ID,
    CHANNEL_2_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    MEMBER_ID,
    SEND_MESSAGES,
    make_settings,
    start_bot,
    stop_bot,
)
from tests.e2e.fake_discord import PIXVERSE_APPLICATION_ID

OTHER_MEMBER_ID = 830000000000000003
JOB_ID = re.compile(r"jobid: (job:[A-Za-z0-9_\-]+)")


@pytest.fixture
def pixverse(fake):
    fake.add_pixverse(step_delay=0.02)
    return fake


async def save_account(fake, token, channel, maxjobs):
    result = await fake.invoke(
        "pixverse-account",
        {"discord": token, "server": str(GUILD_ID), "channel": str(channel), "maxjobs": maxjobs},
        guild_id=GUILD_ID, channel_id=channel, user_id=ADMIN_ID, permissions=MANAGE_GUILD,
    )
    assert result.content.startswith("Saved"), result.content


async def member(fake, name, options=None, *, user_id=MEMBER_ID, channel_id=CHANNEL_ID, permissions=SEND_MESSAGES):
    return await fake.invoke(name, options, guild_id=GUILD_ID, channel_id=channel_id, user_id=user_id,
                             permissions=permissions)


async def until(check, timeout: float = 5.0):
    """Polls an async check until it is true: for state the bot reaches on its own."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def job_id_of(text: str) -> str:
    match = JOB_ID.search(text)
    assert match, text
    return match.group(1)


async def create(fake, prompt="a red fox in the snow", style="Realistic", **extra):
    return await member(fake, "pixverse-create", {"prompt": prompt, "style": style, **extra})


async def test_create_runs_on_pixverse_and_the_member_gets_the_videos(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    result = await create(fake)
    assert result.callback_type == 5  # deferred, then followed up
    messages = await fake.wait_for_messages(result, 2)
    started, completed = messages[0]["content"], messages[1]["content"]
    job_id = job_id_of(started)
    assert started == f"started · jobid: {job_id}\ncreate “a red fox in the snow” (Realistic)"
    lines = completed.splitlines()
    assert lines[:2] == [f"completed · jobid: {job_id}", "create “a red fox in the snow” (Realistic)"]
    assert len(lines[2:]) == 4 and all(line.endswith(".mp4") or ".mp4?" in line for line in lines[2:])
    custom_ids = [c["custom_id"] for row in messages[1]["components"] for c in row["components"]]
    assert f"pixverse:press:U1:{job_id}" in custom_ids and f"pixverse:press:🔀:{job_id}" in custom_ids
    # The account's user ran PixVerse's own /create (not the decoy's), with the member's values.
    (submitted,) = fake.pixverse_interactions
    assert submitted["_user_id"] == ACCOUNT_USER_ID and submitted["application_id"] == str(PIXVERSE_APPLICATION_ID)
    options = {o["name"]: o["value"] for o in submitted["data"]["options"]}
    assert options == {"prompt": "a red fox in the snow", "style": "Realistic"}
    assert fake.decoy_interactions == []
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    assert job.status.value == "completed" and len(job.attachments) == 4


async def test_errors_are_ephemeral_with_their_code(bot, pixverse):
    fake = pixverse
    result = await create(fake)
    assert result.ephemeral and result.content == (
        "404 · No PixVerse account is configured in this server; a server manager can add one with /pixverse-account"
    )
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    bad = await member(fake, "pixverse-create", {"prompt": "   ", "style": "Realistic"})
    assert bad.ephemeral and bad.content == "400 · Required param prompt is missing or empty"
    bad = await member(fake, "pixverse-create", [{"name": "prompt", "type": 3, "value": "x"},
                                                 {"name": "style", "type": 3, "value": "Cubist"}])
    assert bad.content == "400 · Required param style (Cubist) is not one of Realistic, Anime, 3D Animation"


async def test_buttons_run_on_the_account_that_made_the_job(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    await save_account(fake, TOKEN_2, CHANNEL_2_ID, 1)
    result = await create(fake)
    messages = await fake.wait_for_messages(result, 2)
    job_id = job_id_of(messages[0]["content"])
    parent = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    owner_user = ACCOUNT_USER_ID if parent.account_channel_id == str(CHANNEL_ID) else ACCOUNT_2_USER_ID

    pressed = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U2"})
    follow = await fake.wait_for_messages(pressed, 2)
    follow_id = job_id_of(follow[0]["content"])
    assert follow[1]["content"].startswith(f"completed · jobid: {follow_id}\nbutton U2 on jobid: {job_id}")
    press = fake.pixverse_interactions[-1]
    assert press["type"] == 3 and press["_user_id"] == owner_user
    assert press["channel_id"] == parent.account_channel_id
    follow_job = await bot.core.dispatcher.get(follow_id, str(GUILD_ID))
    assert follow_job.account_channel_id == parent.account_channel_id and len(follow_job.attachments) == 1

    # Clicking the Discord button under the result does the same.
    payload = fake.make_interaction("pixverse-jobs", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=MEMBER_ID)
    payload["type"] = 3
    payload["data"] = {"component_type": 2, "custom_id": f"pixverse:press:V1:{job_id}"}
    payload["message"] = {**messages[1], "id": fake.snowflake(), "channel_id": str(CHANNEL_ID), "author": fake.bot_user_payload(),
                          "attachments": [], "embeds": [], "mentions": [], "mention_roles": [], "pinned": False,
                          "tts": False, "timestamp": "2026-11-21T00:00:00+00:00", "edited_timestamp": None,
                          "mention_everyone": False, "type": 0, "flags": 0}
    clicked = await fake.interact(payload)
    clicked_msgs = await fake.wait_for_messages(clicked, 2)
    assert clicked_msgs[1]["content"].startswith("completed · jobid: ")
    assert fake.pixverse_interactions[-1]["_user_id"] == owner_user
    assert "button V1 on jobid: " + job_id in clicked_msgs[1]["content"]


async def test_a_401_takes_the_account_out_of_rotation_and_reset_brings_it_back(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    fake.pixverse_blocked_tokens[TOKEN] = 401
    result = await create(fake)
    final = await fake.wait_for_messages(result, 1)
    assert final[-1]["content"].startswith(f"failed · jobid: {job_id_of(final[-1]['content'])}")
    assert "The PixVerse account left rotation: Discord refused the account's token (401)" in final[-1]["content"]
    listing = await fake.invoke("pixverse-accounts", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID)
    assert "out of rotation: Discord refused the account's token (401)" in listing.content
    busy = await create(fake)
    assert busy.content.startswith("503 · Every PixVerse account of this server is out of rotation")

    del fake.pixverse_blocked_tokens[TOKEN]
    reset = await fake.invoke("pixverse-account-reset", {"channel": str(CHANNEL_ID)}, guild_id=GUILD_ID,
                              channel_id=CHANNEL_ID, user_id=ADMIN_ID)
    assert reset.content.startswith(f"The PixVerse account of <#{CHANNEL_ID}> is back in rotation.")
    again = await create(fake)
    assert (await fake.wait_for_messages(again, 2))[1]["content"].startswith("completed · jobid: ")


async def test_pixverse_never_runs_more_than_max_jobs_and_the_queue_drains(tmp_path, pixverse, restore_discord_endpoints):
    fake = pixverse
    bot, task = await start_bot(make_settings(tmp_path, fake, pixverse_queue_size=3), fake)
    try:
        await save_account(fake, TOKEN, CHANNEL_ID, 2)
        fake.pixverse_hold = True
        running = [await create(fake, prompt=f"fox number {n}") for n in range(2)]
        queued = [await create(fake, prompt=f"fox number {n}") for n in range(2, 5)]
        assert [q.callback_type for q in queued] == [4, 4, 4]
        assert [re.search(r"position (\d)", q.content).group(1) for q in queued] == ["1", "2", "3"]
        refused = await create(fake, prompt="one too many")
        assert refused.ephemeral and refused.content.startswith("429 · All PixVerse accounts are busy\n2 executing: ")
        await fake.wait_for_pixverse_held(2)
        fake.pixverse_hold = False
        fake.pixverse_release()
        for result in running:
            await fake.wait_for_messages(result, 2)
        for result in queued:
            last = (await fake.wait_for_messages(result, 3))[-1]["content"]
            assert last.startswith("completed · jobid: ")
        await fake.wait_for_pixverse_idle()
        assert fake.pixverse_max_executing[ACCOUNT_USER_ID] == 2
        assert len(fake.pixverse_interactions) == 5
    finally:
        await stop_bot(bot, task)


async def test_moderated_prompt_and_job_commands(bot, pixverse):
    fake = pixverse
    fake.pixverse_moderated_words.add("forbidden")
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    result = await create(fake, prompt="a forbidden thing")
    final = (await fake.wait_for_messages(result, 1))[-1]["content"]
    job_id = job_id_of(final)
    # The reason once: PixVerse's embed title, then what its description adds.
    assert final == f"moderated · jobid: {job_id}\ncreate “a forbidden thing” (Realistic)\nBanned prompt\na forbidden thing"

    shown = await member(fake, "pixverse-job", {"jobid": job_id})
    assert shown.ephemeral and shown.content == f"moderated · jobid: {job_id}"
    [embed] = shown.messages[-1]["embeds"]
    assert (embed["title"], embed["description"]) == ("create · moderated", "a forbidden thing")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Job id"] == f"`{job_id}`" and fields["style"] == "Realistic"
    assert fields["Reason"] == "Banned prompt\na forbidden thing"
    assert TOKEN not in json.dumps(shown.messages) and str(CHANNEL_ID) not in json.dumps(embed)
    assert (await member(fake, "pixverse-job", {"jobid": "job:nope"})).content == "404 · Unable to locate job job:nope"

    fake.pixverse_hold = True
    running = await create(fake, prompt="a calm lake")
    await fake.wait_for_pixverse_held(1)
    job_id = job_id_of(running.messages[0]["content"])

    async def in_progress():
        return (await bot.core.dispatcher.get(job_id, str(GUILD_ID))).status.value == "progress"

    await until(in_progress)
    listing = await member(fake, "pixverse-jobs", user_id=OTHER_MEMBER_ID)
    assert listing.content == (
        f"Executing PixVerse jobs in this server: 1\njobid: {job_id} · progress · create · <@{MEMBER_ID}>"
    )
    denied = await member(fake, "pixverse-cancel", {"jobid": job_id}, user_id=OTHER_MEMBER_ID)
    assert denied.content == f"403 · Only the member who asked for job {job_id} or a server manager can cancel it"
    cancelled = await member(fake, "pixverse-cancel", {"jobid": job_id})
    assert cancelled.content == f"cancelled · jobid: {job_id}"
    final = (await fake.wait_for_messages(running, 2))[-1]["content"]
    assert final.startswith(f"cancelled · jobid: {job_id}")
    assert (await member(fake, "pixverse-jobs")).content == "No PixVerse job is executing in this server"
    # PixVerse finishes it anyway: the late result stays with the cancelled job and changes nothing.
    fake.pixverse_release()
    await fake.wait_for_pixverse_idle()

    async def result_seen():
        return not (await bot.core.dispatcher.jobs.open_at_pixverse(str(CHANNEL_ID)))

    await until(result_seen)  # the final message was read and attributed to the cancelled job
    assert (await bot.core.dispatcher.get(job_id, str(GUILD_ID))).status.value == "cancelled"
    assert len(running.messages) == 2


async def test_a_restart_mid_job_resumes_from_history_and_posts_in_the_channel(
    tmp_path, pixverse, restore_discord_endpoints
):
    fake = pixverse
    settings = make_settings(tmp_path, fake)
    bot, task = await start_bot(settings, fake)
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    fake.pixverse_hold = True
    result = await create(fake, prompt="a slow sunrise")
    job_id = job_id_of(result.messages[0]["content"])
    await fake.wait_for_pixverse_held(1)
    await stop_bot(bot, task)

    # While the bot is away PixVerse finishes the job.
    fake.pixverse_hold = False
    fake.pixverse_release()
    await fake.wait_for_pixverse_idle()

    bot, task = await start_bot(settings, fake)
    try:
        posted = await fake.wait_for_channel_message(
            CHANNEL_ID, lambda m: m["author"]["id"] == str(fake.bot_user_id) and job_id in m["content"], timeout=10
        )
        assert posted["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {job_id}")
        job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
        assert job.status.value == "completed" and len(job.attachments) == 4
        assert await bot.core.dispatcher.executing(str(GUILD_ID)) == []
    finally:
        await stop_bot(bot, task)


async def test_only_the_requester_and_managers_press_a_results_buttons_unless_the_server_opens_them(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    messages = await fake.wait_for_messages(await create(fake), 2)
    job_id = job_id_of(messages[0]["content"])
    refused = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U1"}, user_id=OTHER_MEMBER_ID)
    assert refused.ephemeral and refused.content == (
        f"403 · Only the member who asked for job {job_id} or a server manager can press its buttons"
        " (a manager can open them to everyone with /pixverse-settings buttons:everyone)")
    assert [i for i in fake.pixverse_interactions if i["type"] == 3] == []
    # A manager may press them.
    by_manager = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U1"}, user_id=ADMIN_ID,
                              permissions=MANAGE_GUILD)
    assert (await fake.wait_for_messages(by_manager, 2))[1]["content"].startswith("completed · jobid: ")

    # Settings are a manager's; a member cannot change them.
    assert (await member(fake, "pixverse-settings", {"buttons": "everyone"})).content == "401 · Unauthorized"
    shown = await member(fake, "pixverse-settings", None, user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    assert shown.ephemeral and shown.content == (
        "Result buttons: **requester** (only the member who asked for the job and server managers may press them)")
    saved = await member(fake, "pixverse-settings", {"buttons": "everyone"}, user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    assert saved.content == "Saved. Result buttons: **everyone** (every member of the server may press them)"
    opened = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U2"}, user_id=OTHER_MEMBER_ID)
    assert (await fake.wait_for_messages(opened, 2))[1]["content"].startswith("completed · jobid: ")
    assert (await bot.core.dispatcher.servers.get(str(GUILD_ID))).buttons == "everyone"


async def test_pixverse_job_shows_a_four_video_job_as_a_readable_embed_within_limits(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    prompt = "a very long and winding description of a fox " * 11  # 506 characters
    messages = await fake.wait_for_messages(await create(fake, prompt=prompt.strip(), aspect_ratio="9:16"), 2)
    job_id = job_id_of(messages[0]["content"])
    shown = await member(fake, "pixverse-job", {"jobid": job_id})
    assert shown.content == f"completed · jobid: {job_id}"
    [embed] = shown.messages[-1]["embeds"]
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    videos = "\n".join(f["value"] for f in embed["fields"] if f["name"] == "Videos")
    assert videos.splitlines() == [f"[Video {n}]({a['url']})" for n, a in enumerate(job.attachments, 1)]
    assert {f["name"]: f["value"] for f in embed["fields"]}["aspect_ratio"] == "9:16"
    # Within Discord's embed limits.
    total = len(embed["title"]) + len(embed.get("description", "")) + sum(
        len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096 and len(embed["fields"]) <= 25
    assert all(len(f["value"]) <= 1024 for f in embed["fields"]) and total <= 6000
