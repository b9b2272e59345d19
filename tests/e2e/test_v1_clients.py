"""The HTTP API as useapi's v1 clients call it: a client written like them (tests/e2e/v1_client.py)
configures the account, creates, waits out a 429 by its Retry-After, animates an image and presses
a result button, while a receiver checks every replyUrl callback."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import TOKEN
from tests.e2e.conftest import CHANNEL_ID, GUILD_ID, make_settings, start_bot, stop_bot
from tests.e2e.test_http_api import api_token
from tests.e2e.v1_client import V1Client, callback_checker
from tests.net import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16


async def test_a_v1_client_runs_its_whole_flow(tmp_path, fake, restore_discord_endpoints):
    # Steps 0.1 s apart: each state's callback is taken before the next is told (a progress told
    # while the started one is still in flight would be replaced, by design, not sent).
    fake.add_pixverse(step_delay=0.1)
    port = free_port()
    bot, task = await start_bot(make_settings(tmp_path, fake, http_port=port), fake)
    try:
        token = await api_token(fake, GUILD_ID, CHANNEL_ID)
        async with callback_checker() as checker, aiohttp.ClientSession() as session:
            released: list[float] = []

            async def sleep(seconds: float) -> None:
                # The client honours Retry-After; the test lets the running job finish instead of waiting.
                released.append(seconds)
                fake.pixverse_hold = False
                fake.pixverse_release()
                await asyncio.sleep(0.2)

            client = V1Client(f"http://127.0.0.1:{port}/v1/pixverse", token, session, max_jobs=1,
                              reply_url=checker.url, sleep=sleep)
            assert await client.configure(channel=str(CHANNEL_ID), server=str(GUILD_ID), discord=TOKEN) == 204

            first = await client.job("create", prompt="a red fox in the snow", style="Anime", reply_ref="post-1")
            assert (first["status"], first["code"], first["replyRef"]) == ("created", 200, "post-1")
            await checker.final(first["jobid"])
            done = await client.get(first["jobid"])
            assert client.succeeded(done) and len(client.videos(done)) == 4
            assert done["buttons"] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", "🔀"]

            # The only slot is taken: the next request is a 429 with Retry-After, then goes through.
            fake.pixverse_hold = True
            held = await client.job("create_single", prompt="a quiet lake", style="Realistic", seed_value="42",
                                    reply_ref="post-2")
            await fake.wait_for_pixverse_held(1)
            after_wait = await client.job("create", prompt="a busy street", style="3D Animation", reply_ref="post-3")
            assert released and all(wait >= 1 for wait in client.waits) and client.waits == released
            fake.pixverse_hold = False
            fake.pixverse_release()

            animated = await client.job("animate", prompt="it blinks", reply_ref="post-4", files={"image": ("cat.png", PNG)})
            pressed_on = await checker.final(first["jobid"])
            upscale = await client.press(first["jobid"], "U1", reply_ref="post-5")
            assert upscale["verb"] == "pixverse-button" and upscale["code"] == 200

            expected = {held["jobid"]: ("post-2", 1), after_wait["jobid"]: ("post-3", 4), animated["jobid"]: ("post-4", 1),
                        upscale["jobid"]: ("post-5", 1), first["jobid"]: ("post-1", 4)}
            for jobid, (ref, videos) in expected.items():
                calls = await checker.final(jobid)
                assert [c["status"] for c in calls] == ["started", "progress", "completed"], jobid
                assert all(c["jobid"] == jobid and c["replyRef"] == ref and c["code"] == 200 for c in calls)
                assert len(calls[-1]["attachments"]) == videos
                assert client.succeeded(await client.get(jobid))
            assert checker.by_job[animated["jobid"]][-1]["buttons"] == ["U1", "ReDo"]
            assert pressed_on == checker.by_job[first["jobid"]]  # the press made no callback for its parent
            assert checker.problems == []
            sent = [job for job in fake.pixverse_jobs if job["command"] == "create_single"]
            assert sent[0]["options"]["seed_value"] == 42  # text in the form, an integer for PixVerse
            assert max(fake.pixverse_max_executing.values()) == 1  # maxJobs 1, never more
    finally:
        await stop_bot(bot, task)
