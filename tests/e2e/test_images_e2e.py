"""animate and meme_face end to end: a member's attachment or an HTTP file part goes to PixVerse
through the upload flow of part 3, the reply is read by its parameter group, and the image's bytes
are kept with the job exactly until it ends (a restart while it waits included)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import TOKEN
from tests.e2e.conftest import CHANNEL_ID, GUILD_ID, MEMBER_ID, SEND_MESSAGES, make_settings, start_bot, stop_bot
from tests.e2e.fake_discord import MemberFile
from tests.e2e.status_support import buttons_of, fields_of, settled, word_of
from tests.e2e.test_http_api import api_token
from tests.e2e.test_jobs_e2e import create, job_id_of, member, save_account, until
from tests.net import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 30


@pytest.fixture
def pixverse(fake):
    fake.add_pixverse(step_delay=0.02)
    return fake


def pixverse_job(fake, command: str) -> dict:
    jobs = [job for job in fake.pixverse_jobs if job["command"] == command and job["button"] is None]
    assert len(jobs) == 1, [job["command"] for job in fake.pixverse_jobs]
    return jobs[0]


async def test_animate_from_a_members_attachment(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    # The name says text, the bytes say PNG: the bytes decide.
    result = await member(fake, "pixverse-animate",
                          {"image": MemberFile("cat.txt", PNG, "text/plain"), "prompt": "it blinks", "motion": 7})
    job_id = job_id_of(result.messages[0]["content"])
    shown = await settled(result)
    lines = shown["content"].splitlines()
    assert lines[0] == f"<@{MEMBER_ID}> completed · jobid: {job_id}"
    assert len(lines) == 2 and ".mp4" in lines[1]  # one video
    assert buttons_of(shown) == [["Upscale 1"], ["Redo"], ["Video 1"]]
    assert shown["embeds"][0]["title"] == "animate · it blinks"
    assert fields_of(shown)["image"] == "cat.txt" and fields_of(shown)["motion"] == "7"
    sent = pixverse_job(fake, "animate")
    assert sent["images"]["image"]["data"] == PNG and sent["images"]["image"]["filename"] == "cat.txt"
    assert sent["options"]["motion"] == 7 and sent["options"]["prompt"] == "it blinks"
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    assert job.status.value == "completed" and [b["label"] for b in job.buttons] == ["U1", "ReDo"]
    assert job.params["image"] == {"filename": "cat.txt", "size": len(PNG), "content_type": "image/png"}
    assert await bot.core.dispatcher.jobs.images(job_id) == {}  # gone once the job ended


@pytest.mark.parametrize("behind", [0.0, 60.0])
async def test_an_attachment_slower_than_discords_3_s_is_answered_publicly_first(bot, pixverse, behind):
    """Discord wants an answer within 3 s: an attachment still downloading after 2 s gets a public
    "thinking…" answer. A refusal then replaces it privately; a job makes it its status message.
    The 3 s are Discord's: a machine whose clock is a minute behind Discord's still answers in time."""
    fake = pixverse
    fake.cdn_delay = 2.5
    fake.clock_ahead = behind
    refused = await member(fake, "pixverse-animate", {"image": MemberFile("a.png", PNG)})
    assert refused.callback_type == 5  # deferred, thinking, public

    async def told() -> bool:
        return bool(refused.messages)

    await until(told)
    assert refused.deleted_message_ids == [refused.original_message_id]  # the public "thinking…" is gone
    assert refused.ephemeral and refused.content == (
        "404 · No PixVerse account is configured in this server; a server manager can add one with /pixverse-account")
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    placed = await member(fake, "pixverse-animate", {"image": MemberFile("a.png", PNG)})
    assert placed.callback_type == 5 and placed.deleted_message_ids == []
    job_id = job_id_of(placed.messages[0]["content"])
    shown = await settled(placed)
    assert shown["content"].splitlines()[0] == f"<@{MEMBER_ID}> completed · jobid: {job_id}"
    assert not placed.ephemeral


async def test_meme_face_from_a_members_attachment(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    result = await member(fake, "pixverse-meme-face",
                          {"face": MemberFile("me.jpg", JPEG, "image/jpeg"), "prompt": "a dancing astronaut",
                           "aspect_ratio": "9:16"})
    shown = await settled(result)
    assert word_of(shown["content"]) == "completed"
    assert shown["embeds"][0]["title"] == "meme_face · a dancing astronaut" and fields_of(shown)["face"] == "me.jpg"
    sent = pixverse_job(fake, "meme_face")
    assert sent["images"]["face"]["data"] == JPEG
    assert sent["options"]["aspect_ratio"] == "9:16"


async def test_a_bad_attachment_is_refused_and_nothing_is_sent(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    cases = [
        ({"image": MemberFile("cat.png", b"not an image at all", "image/png")},
         "400 · Param image (cat.png) is not a PNG, JPEG or WEBP image"),
        ({"prompt": "no image"}, "400 · Required param image is missing or empty"),
        ({"image": MemberFile("cat.png", PNG), "motion": 11}, "400 · Param motion (11) must be an integer from 1 to 10"),
    ]
    # A modified client's option of another type, or an attachment Discord did not resolve.
    cases += [([{"name": "image", "type": 3, "value": "https://example.com/x.png"}],
               "400 · Param image must be a file attached to the command"),
              ([{"name": "image", "type": 11, "value": "999"}], "400 · Param image must be a file attached to the command")]
    for options, text in cases:
        result = await member(fake, "pixverse-animate", options)
        assert result.ephemeral and result.content == text
    result = await member(fake, "pixverse-meme-face", {"face": MemberFile("me.png", PNG)})
    assert result.content == "400 · Required param prompt is missing or empty"
    # Announced small, served larger than the limit: the download stops at the limit.
    payload = fake.make_interaction("pixverse-animate", {"image": MemberFile("cat.png", PNG + bytes(11 * 1024 * 1024))},
                                    guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=MEMBER_ID,
                                    permissions=SEND_MESSAGES)
    for attachment in payload["data"]["resolved"]["attachments"].values():
        attachment["size"] = 1000
    result = await fake.interact(payload)
    assert result.ephemeral and result.content == "400 · Param image (cat.png) is larger than 10 MB"
    assert fake.pixverse_jobs == [] and fake.uploads == {}
    assert await bot.core.dispatcher.executing(str(GUILD_ID)) == []


async def test_animate_over_http_multipart_and_its_refusals(tmp_path, pixverse, restore_discord_endpoints):
    fake = pixverse
    port = free_port()
    bot, task = await start_bot(make_settings(tmp_path, fake, http_port=port), fake)
    try:
        await save_account(fake, TOKEN, CHANNEL_ID, 2)
        token = await api_token(fake, GUILD_ID, CHANNEL_ID)
        base = f"http://127.0.0.1:{port}/v1/pixverse"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
            async def post(path: str, fields: dict, files: dict | None = None):
                form = aiohttp.FormData()
                for name, value in fields.items():
                    form.add_field(name, value)
                for name, (filename, data) in (files or {}).items():
                    form.add_field(name, data, filename=filename, content_type="application/octet-stream")
                async with session.post(base + path, data=form) as response:
                    return response.status, await response.json()

            # As v1 clients send it: text numbers, empty fields for what is not set.
            status, job = await post("/animate", {"prompt": "it blinks", "motion": "3", "seed_value": "",
                                                   "maxJobs": "2", "discord": "", "hd_quality": "Yes"},
                                     {"image": ("photo.webp.png", PNG)})
            assert status == 200, job
            assert (job["verb"], job["status"], job["code"]) == ("pixverse-animate", "created", 200)

            async def ended():
                async with session.get(base + "/jobs/", params={"jobid": job["jobid"]}) as response:
                    return (await response.json())["status"] == "completed"

            await until(ended, timeout=10)
            async with session.get(base + "/jobs/", params={"jobid": job["jobid"]}) as response:
                done = await response.json()
            assert done["code"] == 200 and done["buttons"] == ["U1", "ReDo"]
            assert [a["content_type"] for a in done["attachments"]] == ["video/mp4"]
            assert isinstance(done["timestamp"], str) and done["embeds"] == []
            sent = pixverse_job(fake, "animate")
            assert sent["images"]["image"]["data"] == PNG
            assert (sent["options"]["motion"], sent["options"]["hd_quality"]) == (3, "Yes")
            assert "seed_value" not in sent["options"]
            assert await bot.core.dispatcher.jobs.images(job["jobid"]) == {}

            refusals = [
                ("/animate", {"prompt": "x"}, {"image": ("notes.png", b"plain text")}, 400,
                 "Param image (notes.png) is not a PNG, JPEG or WEBP image"),
                ("/animate", {"prompt": "x", "image": ""}, None, 400, "Required param image is missing or empty"),
                ("/animate", {"prompt": "x"}, {"image": ("big.png", PNG + b"\0" * (10 * 1024 * 1024))}, 400,
                 "Param image (big.png) is larger than 10 MB"),
                ("/animate", {"prompt": "x"}, {"image": ("a.png", PNG), "prompt_file": ("b.png", PNG)}, 400,
                 "Param prompt_file must be a text field, not a file"),
                ("/meme_face", {"prompt": "x"}, {"face": ("a.png", PNG), "image": ("b.png", PNG)}, 400,
                 "Param image must be a text field, not a file"),
                ("/create", {"prompt": "x", "style": "Anime"}, {"image": ("a.png", PNG)}, 400,
                 "Param image must be a text field, not a file"),
                ("/meme_face", {"prompt": ""}, {"face": ("a.png", PNG)}, 400, "Required param prompt is missing or empty"),
            ]
            refusals.append(("/animate", {f"field{n}": "x" for n in range(40)}, {"image": ("a.png", PNG)}, 413,
                             "Request body has more than 32 parts or 65536 bytes beside its images"))
            for path, fields, files, code, text in refusals:
                status, body = await post(path, fields, files)
                assert (status, body["error"]) == (code, text), (path, fields)
            async with session.post(base + "/animate", json={"image": "https://example.com/cat.png"}) as response:
                assert (response.status, (await response.json())["error"]) == (
                    400, "Param image must be a file: send it as a file part of a multipart/form-data body")
        assert len([j for j in fake.pixverse_jobs if j["command"] in ("animate", "meme_face")]) == 1
    finally:
        await stop_bot(bot, task)


async def test_a_restart_while_an_animate_job_waits_still_sends_its_image(tmp_path, pixverse, restore_discord_endpoints):
    fake = pixverse
    settings = make_settings(tmp_path, fake, pixverse_queue_size=5)
    bot, task = await start_bot(settings, fake)
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    fake.pixverse_hold = True
    await create(fake, prompt="a slow sunrise")
    await fake.wait_for_pixverse_held(1)
    queued = await member(fake, "pixverse-animate", {"image": MemberFile("cat.png", PNG), "prompt": "it waits"})
    job_id = job_id_of(queued.content)
    assert queued.content == f"waiting · position 1 of 1 · jobid: {job_id}"
    assert (await bot.core.dispatcher.jobs.images(job_id))["image"].data == PNG
    await stop_bot(bot, task)

    bot, task = await start_bot(settings, fake)
    try:
        fake.pixverse_hold = False
        fake.pixverse_release()

        async def animate_done():
            job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
            return job.status.value == "completed"

        await until(animate_done, timeout=15)
        assert pixverse_job(fake, "animate")["images"]["image"]["data"] == PNG
        assert await bot.core.dispatcher.jobs.images(job_id) == {}
        posted = await fake.wait_for_channel_message(
            CHANNEL_ID, lambda m: m["author"]["id"] == str(fake.bot_user_id) and job_id in m["content"]
            and "completed" in m["content"], timeout=10)
        assert posted["content"].startswith(f"<@{MEMBER_ID}> completed · jobid: {job_id}")
    finally:
        await stop_bot(bot, task)
