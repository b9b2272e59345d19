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
    hold_the_database,
    make_settings,
    start_bot,
    stop_bot,
)
from tests.e2e.fake_discord import PIXVERSE_APPLICATION_ID
from tests.e2e.status_support import buttons_of, fields_of, reply_of, settled, the_jobs_channel_message, word_of

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
    assert result.callback_type == 4  # the reply is the job's status message
    job_id = job_id_of(result.messages[0]["content"])
    assert result.messages[0]["content"] == f"created · jobid: {job_id}"
    shown = await settled(result)
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    urls = [a["url"] for a in job.attachments]
    # The first video in the content (Discord previews it), every video behind a Link button.
    assert shown["content"] == f"<@{MEMBER_ID}> completed · jobid: {job_id}\n{urls[0]}"
    assert buttons_of(shown) == [["Upscale 1", "Upscale 2", "Upscale 3", "Upscale 4"],
                                 ["Variation 1", "Variation 2", "Variation 3", "Variation 4"], ["Redo", "🔀"],
                                 ["Video 1", "Video 2", "Video 3", "Video 4"]]
    assert [c["url"] for c in shown["components"][3]["components"]] == urls
    custom_ids = [c.get("custom_id") for row in shown["components"] for c in row["components"]]
    assert f"pixverse:press:U1:{job_id}" in custom_ids and f"pixverse:press:🔀:{job_id}" in custom_ids
    # The account's user ran PixVerse's own /create (not the decoy's), with the member's values.
    (submitted,) = fake.pixverse_interactions
    assert submitted["_user_id"] == ACCOUNT_USER_ID and submitted["application_id"] == str(PIXVERSE_APPLICATION_ID)
    options = {o["name"]: o["value"] for o in submitted["data"]["options"]}
    assert options == {"prompt": "a red fox in the snow", "style": "Realistic"}
    assert fake.decoy_interactions == []
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    assert job.status.value == "completed" and len(job.attachments) == 4


async def test_pixverses_result_met_by_a_database_blip_is_read_again_from_the_channel(bot, pixverse, monkeypatch,
                                                                                      caplog):
    """PixVerse's final message came while the database was away: the message was dropped, and
    the job timed out as failed 15 minutes later, its slot held, though its videos were there. The
    channel's history is now read again once the database answers."""
    import sys

    from bot.errors import StoreUnavailable

    fake = pixverse
    # The module discord.py loaded the cog from (load_extension keeps it in sys.modules only).
    monkeypatch.setattr(sys.modules["cogs.jobs"], "CATCH_UP_FIRST_SECONDS", 0.05)
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    jobs = bot.core.dispatcher.jobs
    real, away = jobs.release, [StoreUnavailable("ConnectionDoesNotExistError"), StoreUnavailable("ConnectionRefusedError")]

    async def release(*args, **kwargs):
        if away:
            raise away.pop(0)  # the result, then the first read of the history
        return await real(*args, **kwargs)

    monkeypatch.setattr(jobs, "release", release)
    result = await create(fake)
    shown = await settled(result)
    job_id = job_id_of(result.messages[0]["content"])
    assert shown["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {job_id}")
    assert (await bot.core.dispatcher.get(job_id, str(GUILD_ID))).status.value == "completed"
    assert away == []
    assert [r.getMessage() for r in caplog.records if "waits for the database" in r.getMessage()] == [
        f"A PixVerse message in channel {CHANNEL_ID} waits for the database (ConnectionDoesNotExistError); the"
        " channel's history is read again once it answers"]


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
    shown = await settled(result)
    job_id = job_id_of(shown["content"])
    parent = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    owner_user = ACCOUNT_USER_ID if parent.account_channel_id == str(CHANNEL_ID) else ACCOUNT_2_USER_ID

    pressed = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U2"})
    follow = await settled(pressed)
    follow_id = job_id_of(follow["content"])
    assert follow["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {follow_id}\n")
    assert follow["embeds"][0]["title"] == f"button · U2 on {job_id}"
    press = fake.pixverse_interactions[-1]
    assert press["type"] == 3 and press["_user_id"] == owner_user
    assert press["channel_id"] == parent.account_channel_id
    follow_job = await bot.core.dispatcher.get(follow_id, str(GUILD_ID))
    assert follow_job.account_channel_id == parent.account_channel_id and len(follow_job.attachments) == 1

    # Clicking the Discord button under the result does the same.
    payload = fake.make_interaction("pixverse-jobs", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=MEMBER_ID)
    payload["type"] = 3
    payload["data"] = {"component_type": 2, "custom_id": f"pixverse:press:V1:{job_id}"}
    payload["message"] = {**shown, "id": fake.snowflake(), "channel_id": str(CHANNEL_ID), "author": fake.bot_user_payload(),
                          "attachments": [], "embeds": [], "mentions": [], "mention_roles": [], "pinned": False,
                          "tts": False, "timestamp": "2026-11-21T00:00:00+00:00", "edited_timestamp": None,
                          "mention_everyone": False, "type": 0, "flags": 0}
    clicked = await fake.interact(payload)
    clicked_shown = await settled(clicked)
    assert word_of(clicked_shown["content"]) == "completed"
    assert fake.pixverse_interactions[-1]["_user_id"] == owner_user
    assert clicked_shown["embeds"][0]["title"] == f"button · V1 on {job_id}"


async def test_a_401_takes_the_account_out_of_rotation_and_reset_brings_it_back(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    fake.pixverse_blocked_tokens[TOKEN] = 401
    result = await create(fake)
    final = await settled(result)
    assert final["content"] == f"<@{MEMBER_ID}> failed · jobid: {job_id_of(final['content'])}"
    assert final["embeds"][0]["color"] == 0xED4245
    reason = "The PixVerse account left rotation: Discord refused the account's token (401)"
    assert fields_of(final)["Reason"] == reason  # once, in the embed only
    assert json.dumps(final).count("Discord refused the account") == 1
    listing = await fake.invoke("pixverse-accounts", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID)
    assert "out of rotation: Discord refused the account's token (401)" in listing.content
    assert listing.content.count("Discord refused the account's token (401)") == 1
    busy = await create(fake)
    assert busy.content.startswith("503 · Every PixVerse account of this server is out of rotation")

    del fake.pixverse_blocked_tokens[TOKEN]
    reset = await fake.invoke("pixverse-account-reset", {"channel": str(CHANNEL_ID)}, guild_id=GUILD_ID,
                              channel_id=CHANNEL_ID, user_id=ADMIN_ID)
    assert reset.content.startswith(f"The PixVerse account of <#{CHANNEL_ID}> is back in rotation.")
    again = await create(fake)
    assert word_of((await settled(again))["content"]) == "completed"


async def test_pixverse_never_runs_more_than_max_jobs_and_the_queue_drains(tmp_path, pixverse, restore_discord_endpoints):
    fake = pixverse
    bot, task = await start_bot(make_settings(tmp_path, fake, pixverse_queue_size=3), fake)
    try:
        await save_account(fake, TOKEN, CHANNEL_ID, 2)
        fake.pixverse_hold = True
        running = [await create(fake, prompt=f"fox number {n}") for n in range(2)]
        queued = [await create(fake, prompt=f"fox number {n}") for n in range(2, 5)]
        assert [q.callback_type for q in queued] == [4, 4, 4]
        assert [re.search(r"^waiting · position (\d) of \d · jobid: ", q.messages[0]["content"]).group(1)
                for q in queued] == ["1", "2", "3"]
        refused = await create(fake, prompt="one too many")
        assert refused.ephemeral and refused.content.startswith("429 · All PixVerse accounts are busy\n2 executing: ")
        # When a slot is likely free (the HTTP API's Retry-After), in words.
        assert re.fullmatch(r"Try again in about (\d+ s|\d+ min)", refused.content.splitlines()[-1]), refused.content
        await fake.wait_for_pixverse_held(2)
        fake.pixverse_hold = False
        fake.pixverse_release()
        for result in running + queued:
            assert word_of((await settled(result))["content"]) == "completed"
            # One status message per job, edited in place; beside it at most the short notice of the
            # end (a followup: Discord notifies no one of a mention added by an edit).
            status = {i for i, m in zip(result.message_ids, result.messages) if m["kind"] != "followup"}
            assert len(status) == 1

            async def noticed(result=result) -> bool:
                return any(m["kind"] == "followup" for m in result.messages)

            await until(noticed)
            job_id = job_id_of(reply_of(result)["content"])
            assert [m["content"] for m in result.messages if m["kind"] == "followup"] == [
                f"<@{MEMBER_ID}> completed · jobid: {job_id} · your video is ready"]
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
    final = await settled(result)
    job_id = job_id_of(final["content"])
    assert final["content"] == f"<@{MEMBER_ID}> moderated · jobid: {job_id}"
    # The reason once: PixVerse's embed title, then what its description adds.
    assert fields_of(final)["Reason"] == "Banned prompt\na forbidden thing"
    assert json.dumps(final).count("Banned prompt") == 1 and final["embeds"][0]["color"] == 0xED4245

    shown = await member(fake, "pixverse-job", {"jobid": job_id})
    assert shown.ephemeral and shown.content == f"moderated · jobid: {job_id}"
    [embed] = shown.messages[-1]["embeds"]
    assert (embed["title"], embed["description"]) == ("create · a forbidden thing", "**moderated**")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Job id"] == f"`{job_id}`" and fields["style"] == "Realistic"
    assert fields["Reason"] == "Banned prompt\na forbidden thing"
    # A link to the job's message (in the channel where the member asked); the account's channel
    # (here the same one) appears nowhere else.
    message_id = result.original_message_id
    assert fields.pop("Message") == f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{message_id}"
    assert TOKEN not in json.dumps(shown.messages) and str(CHANNEL_ID) not in json.dumps(fields)
    assert (await member(fake, "pixverse-job", {"jobid": "job:nope"})).content == "404 · Unable to locate job job:nope"

    fake.pixverse_hold = True
    running = await create(fake, prompt="a calm lake")
    await fake.wait_for_pixverse_held(1)
    job_id = job_id_of(running.messages[0]["content"])

    async def in_progress():
        return (await bot.core.dispatcher.get(job_id, str(GUILD_ID))).status.value == "progress"

    await until(in_progress)
    listing = await member(fake, "pixverse-jobs", user_id=OTHER_MEMBER_ID)
    assert listing.ephemeral and listing.content == "PixVerse jobs in this server: 1 executing, 0 waiting"
    assert listing.messages[-1]["embeds"][0]["description"] == (
        f"`{job_id}` · **progress ▰▰▰▱▱▱▱▱▱▱ 37%** · create · <@{MEMBER_ID}>")
    denied = await member(fake, "pixverse-cancel", {"jobid": job_id}, user_id=OTHER_MEMBER_ID)
    assert denied.content == f"403 · Only the member who asked for job {job_id} or a server manager can cancel it"
    cancelled = await member(fake, "pixverse-cancel", {"jobid": job_id})
    assert cancelled.content == f"cancelled · jobid: {job_id}"
    final = await settled(running)
    assert final["content"] == f"<@{MEMBER_ID}> cancelled · jobid: {job_id}"
    assert fields_of(final)["Reason"] == f"Cancelled by <@{MEMBER_ID}>"
    writes = len(running.messages)
    assert (await member(fake, "pixverse-jobs")).content == "No PixVerse job is executing or waiting in this server"
    # PixVerse finishes it anyway: the late result stays with the cancelled job and changes nothing.
    fake.pixverse_release()
    await fake.wait_for_pixverse_idle()

    async def result_seen():
        return not (await bot.core.dispatcher.jobs.open_at_pixverse(str(CHANNEL_ID)))

    await until(result_seen)  # the final message was read and attributed to the cancelled job
    assert (await bot.core.dispatcher.get(job_id, str(GUILD_ID))).status.value == "cancelled"
    await asyncio.sleep(0.2)
    assert len(running.messages) == writes and word_of(reply_of(running)["content"]) == "cancelled"


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
        # One channel message for the job (mentioning the member), edited to its end.
        posted = await the_jobs_channel_message(fake, CHANNEL_ID, job_id, timeout=10)
        assert posted["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {job_id}\n")
        job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
        assert job.status.value == "completed" and len(job.attachments) == 4
        assert await bot.core.dispatcher.executing(str(GUILD_ID)) == []
    finally:
        await stop_bot(bot, task)


async def test_only_the_requester_and_managers_press_a_results_buttons_unless_the_server_opens_them(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    job_id = job_id_of((await settled(await create(fake)))["content"])
    refused = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U1"}, user_id=OTHER_MEMBER_ID)
    assert refused.ephemeral and refused.content == (
        f"403 · Only the member who asked for job {job_id} or a server manager can press its buttons"
        " (a manager can open them to everyone with /pixverse-settings buttons:everyone)")
    assert [i for i in fake.pixverse_interactions if i["type"] == 3] == []
    # A manager may press them.
    by_manager = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U1"}, user_id=ADMIN_ID,
                              permissions=MANAGE_GUILD)
    assert word_of((await settled(by_manager))["content"]) == "completed"

    # Settings are a manager's; a member cannot change them.
    assert (await member(fake, "pixverse-settings", {"buttons": "everyone"})).content == "401 · Unauthorized"
    shown = await member(fake, "pixverse-settings", None, user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    alerts_off = "Alerts: off (choose a channel with /pixverse-settings alerts:#channel)"
    assert shown.ephemeral and shown.content == (
        "Result buttons: **requester** (only the member who asked for the job and server managers may press them)\n"
        + alerts_off)
    saved = await member(fake, "pixverse-settings", {"buttons": "everyone"}, user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    assert saved.content == ("Saved. Result buttons: **everyone** (every member of the server may press them)\n"
                             + alerts_off)
    opened = await member(fake, "pixverse-button", {"jobid": job_id, "button": "U2"}, user_id=OTHER_MEMBER_ID)
    assert word_of((await settled(opened))["content"]) == "completed"
    assert (await bot.core.dispatcher.servers.get(str(GUILD_ID))).buttons == "everyone"


async def test_pixverse_job_shows_a_four_video_job_as_a_readable_embed_within_limits(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    prompt = "a very long and winding description of a fox " * 11  # 506 characters
    job_id = job_id_of((await settled(await create(fake, prompt=prompt.strip(), aspect_ratio="9:16")))["content"])
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


async def test_a_busy_database_still_answers_the_command_within_discords_3_s(bot, pixverse, settings):
    """Placing the job waits for the database: past 2 s the command answers "thinking…" in public,
    and the job's status message replaces it. Discord refuses a first answer after 3 s."""
    fake = pixverse
    fake.interaction_answer_seconds = 3.0
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    await bot.core.dispatcher.wait_idle()  # its start's recovery done: the held file waits for the command alone
    hold_the_database(settings.database_path, 3.5)
    placed = await member(fake, "pixverse-create", {"prompt": "a cat in the rain", "style": "Realistic"})
    assert (placed.callback_type, placed.late_callbacks) == (5, 0)  # thinking, in time
    assert placed.deleted_message_ids == [] and not placed.ephemeral
    shown = await settled(placed)
    assert shown["content"].splitlines()[0] == f"<@{MEMBER_ID}> completed · jobid: {job_id_of(shown['content'])}"


async def test_a_database_busy_past_its_timeout_is_told_to_the_member_alone(bot, pixverse, settings):
    """The public "thinking…" goes away and the member alone reads why; no job was placed."""
    fake = pixverse
    fake.interaction_answer_seconds = 3.0
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    await bot.core.dispatcher.wait_idle()  # its start's recovery done: the held file waits for the command alone
    release = hold_the_database(settings.database_path, 30.0)  # past the busy timeout, whenever the write began
    refused = await member(fake, "pixverse-create", {"prompt": "a cat in the rain", "style": "Realistic"})

    async def told() -> bool:
        return bool(refused.messages)

    await until(told, timeout=10)
    release()
    assert (refused.callback_type, refused.late_callbacks) == (5, 0), refused.messages
    assert refused.deleted_message_ids == [refused.original_message_id]
    assert refused.ephemeral and refused.content == "503 · The database is busy; please try again in a moment"
    assert await bot.core.dispatcher.of_member(str(GUILD_ID), str(MEMBER_ID)) == []  # nothing was placed


async def test_a_cancel_waiting_for_the_database_answers_privately_within_discords_3_s(bot, pixverse, settings):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    await bot.core.dispatcher.wait_idle()  # its start's recovery done: the held file waits for the command alone
    fake.pixverse_hold = True
    running = await create(fake, prompt="a calm lake")
    await fake.wait_for_pixverse_held(1)
    job_id = job_id_of(running.messages[0]["content"])
    fake.interaction_answer_seconds = 3.0
    hold_the_database(settings.database_path, 3.5)
    cancelled = await member(fake, "pixverse-cancel", {"jobid": job_id})
    assert (cancelled.callback_type, cancelled.late_callbacks) == (5, 0)  # thinking, in time, to the member alone
    assert cancelled.ephemeral and cancelled.content == f"cancelled · jobid: {job_id}"
    assert cancelled.deleted_message_ids == []
    fake.pixverse_release()


async def test_a_channel_the_bot_cannot_post_in_refuses_jobs_naming_what_is_missing(bot, pixverse):
    """Past Discord's 15 minutes, or after a restart, a job's end is a channel message: where the
    bot may not post one, the command is refused at once rather than the end lost without a word."""
    from tests.e2e.fake_discord import DEFAULT_EVERYONE_PERMISSIONS

    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    send, embed = 1 << 11, 1 << 14
    fake.app_permissions[CHANNEL_2_ID] = DEFAULT_EVERYONE_PERMISSIONS & ~(send | embed)
    refused = await member(fake, "pixverse-create", {"prompt": "a fox", "style": "Realistic"}, channel_id=CHANNEL_2_ID)
    assert refused.ephemeral and refused.content == (
        "403 · The bot cannot post in this channel: it needs Send Messages and Embed Links here to show a job that"
        " lasts past Discord's 15 minutes or a restart. Ask a server manager to allow it, or use another channel")
    history = 1 << 16
    fake.app_permissions[CHANNEL_2_ID] = DEFAULT_EVERYONE_PERMISSIONS & ~(embed | history)
    refused = await member(fake, "pixverse-create", {"prompt": "a fox", "style": "Realistic"}, channel_id=CHANNEL_2_ID)
    assert refused.content.startswith(
        "403 · The bot cannot post in this channel: it needs Embed Links and Read Message History here ")
    assert await bot.core.dispatcher.of_member(str(GUILD_ID), str(MEMBER_ID)) == []  # nothing placed
    placed = await member(fake, "pixverse-create", {"prompt": "a fox", "style": "Realistic"})  # where it may
    assert word_of((await settled(placed))["content"]) == "completed"


async def test_in_a_thread_the_bot_needs_send_messages_in_threads(bot, pixverse, fake):
    from tests.e2e.fake.payloads import text_channel
    from tests.e2e.fake_discord import DEFAULT_EVERYONE_PERMISSIONS

    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    thread_id = CHANNEL_2_ID + 7
    fake.guilds[GUILD_ID]["channels"][thread_id] = {
        **text_channel(thread_id, GUILD_ID, name="a-thread"), "type": 11, "parent_id": str(CHANNEL_ID),
        "owner_id": str(MEMBER_ID), "message_count": 0, "member_count": 1,
        "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                            "archive_timestamp": "2026-12-01T00:00:00+00:00"}}
    send, in_threads = 1 << 11, 1 << 38
    fake.app_permissions[thread_id] = DEFAULT_EVERYONE_PERMISSIONS & ~in_threads
    refused = await member(fake, "pixverse-create", {"prompt": "a fox", "style": "Realistic"}, channel_id=thread_id)
    assert refused.content.startswith("403 · The bot cannot post in this channel: it needs Send Messages in Threads here ")
    fake.app_permissions[thread_id] = DEFAULT_EVERYONE_PERMISSIONS & ~send  # a thread needs only its own
    placed = await member(fake, "pixverse-create", {"prompt": "a fox", "style": "Realistic"}, channel_id=thread_id)
    assert word_of((await settled(placed))["content"]) == "completed"
