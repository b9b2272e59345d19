"""The bot's gateway filter and PixVerse queue, end to end: the real bot on the fake Discord.

Messages the bot does not follow never reach discord.py's parser (bot/gateway_filter.py); PixVerse's
in the account channels do, and a job still ends as it always did, however fast PixVerse edits.
"""

from __future__ import annotations

import pytest

from tests.conftest import TOKEN
from tests.e2e.conftest import CHANNEL_2_ID, CHANNEL_ID, GUILD_ID, MEMBER_ID, OTHER_CHANNEL_ID
from tests.e2e.test_jobs_e2e import create, job_id_of, save_account, until
from bot.dispatch.models import JobStatus
from cogs.jobs.presenting import JOBS_COG


@pytest.fixture
def pixverse(fake):
    fake.add_pixverse(step_delay=0.02)
    return fake


async def test_unfollowed_messages_are_dropped_before_discord_py_and_a_job_still_runs(bot, pixverse):
    fake = pixverse
    cog = bot.get_cog(JOBS_COG)
    assert cog.gate.installed, "the gateway filter must install on the discord.py release the bot ships with"
    assert bot._connection.max_messages is None and len(bot.cached_messages) == 0
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    assert str(CHANNEL_ID) in bot.core.dispatcher.backend.channels  # told by account.saved

    dropped = cog.gate.dropped
    chatter = [
        fake.channel_message_object(channel_id=channel, author=fake.public_user_payload(MEMBER_ID), content="hi")
        for channel in (CHANNEL_ID, CHANNEL_2_ID, OTHER_CHANNEL_ID)
    ]
    for message in chatter:
        await fake._emit_message_create(message)
        await fake._edit_channel_message(message, content="hi!")
    # PixVerse in a channel with no account: not followed either.
    elsewhere = fake.channel_message_object(channel_id=CHANNEL_2_ID, author=fake.pixverse_user_payload(),
                                            content="<@1> (prompt: x style: Realistic aspect-ratio: 16:9) (5%)")
    await fake._emit_message_create(elsewhere)

    async def all_dropped() -> bool:
        return cog.gate.dropped >= dropped + 7

    await until(all_dropped)

    fake.pixverse_progress_steps = list(range(1, 100, 3))  # a quick run of edits
    result = await create(fake)
    job_id = job_id_of(result.messages[0]["content"])

    async def completed() -> bool:
        return (await bot.core.dispatcher.get(job_id, str(GUILD_ID))).status is JobStatus.COMPLETED

    await until(completed, timeout=10)
    job = await bot.core.dispatcher.get(job_id, str(GUILD_ID))
    assert len(job.attachments) == 4
    assert cog._pending_count == 0
    assert cog.gate.passed > 0  # PixVerse's messages and the bot's own went on to discord.py
