"""What a server's managers watch, end to end: alerts in the channel they chose when an account
leaves rotation or comes back, and /pixverse-status."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import TOKEN
from tests.e2e.conftest import ADMIN_ID, CHANNEL_2_ID, CHANNEL_ID, GUILD_ID, MANAGE_GUILD, OTHER_CHANNEL_ID
from tests.e2e.status_support import settled, word_of
from tests.e2e.test_jobs_e2e import create, member, save_account



@pytest.fixture
def pixverse(fake):
    fake.add_pixverse(step_delay=0.02)
    return fake


BUTTONS_LINE = "Result buttons: **requester** (only the member who asked for the job and server managers may press them)"


async def manager(fake, name, options=None):
    return await member(fake, name, options, user_id=ADMIN_ID, permissions=MANAGE_GUILD)


def alerts_in(fake, channel_id: int) -> list[str]:
    return [m["content"] for m in fake.channel_messages.get(channel_id, [])
            if m["author"]["id"] == str(fake.bot_user_id)]


async def test_a_manager_chooses_the_alerts_channel_and_turns_it_off(bot, pixverse):
    fake = pixverse
    assert (await member(fake, "pixverse-settings", {"alerts": CHANNEL_2_ID})).content == "401 · Unauthorized"
    saved = await manager(fake, "pixverse-settings", {"alerts": CHANNEL_2_ID})
    assert saved.ephemeral and saved.content == (
        f"Saved. {BUTTONS_LINE}\nAlerts: <#{CHANNEL_2_ID}> (an account leaving rotation, and coming back)")
    both = await manager(fake, "pixverse-settings", {"alerts": CHANNEL_2_ID, "alerts_off": True})
    assert both.content == "400 · Choose an alerts channel or alerts_off, not both"
    off = await manager(fake, "pixverse-settings", {"alerts_off": True})
    assert off.content == (f"Saved. {BUTTONS_LINE}\n"
                           "Alerts: off (choose a channel with /pixverse-settings alerts:#channel)")
    assert (await bot.core.dispatcher.servers.get(str(GUILD_ID))).alerts_channel_id is None



async def test_a_channel_of_another_server_is_refused_as_alerts_channel_and_never_posted_to(bot, pixverse, caplog):
    """discord.py gives a resolved channel option the interaction's server id, whatever server the
    channel is in: a manager naming another server's channel was saved, and its alerts went there."""
    fake = pixverse
    refused = await manager(fake, "pixverse-settings", {"alerts": OTHER_CHANNEL_ID})
    assert refused.ephemeral and refused.content == (
        f"400 · Param alerts (<#{OTHER_CHANNEL_ID}>) is not a channel of this server")
    assert (await bot.core.dispatcher.servers.get(str(GUILD_ID))).alerts_channel_id is None
    # One saved before this check: the account's alert is not posted there.
    await bot.core.dispatcher.servers.set(str(GUILD_ID), alerts_channel_id=str(OTHER_CHANNEL_ID))
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    fake.pixverse_blocked_tokens[TOKEN] = 401
    await settled(await create(fake))
    for _ in range(200):
        if "is not one of its channels" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert f"The alerts channel {OTHER_CHANNEL_ID} of server {GUILD_ID} is not one of its channels" in caplog.text
    assert alerts_in(fake, OTHER_CHANNEL_ID) == []


SEND_MESSAGES = 1 << 11
VIEW_CHANNEL = 1 << 10


async def overwrite_everyone(bot, fake, channel_id: int, deny: int) -> None:
    """Denies ``deny`` to @everyone in the channel through CHANNEL_UPDATE, as a server admin would,
    and waits until the bot's cache has it."""
    channel = fake.channel_payload(channel_id)
    channel["permission_overwrites"] = [{"id": str(GUILD_ID), "type": 0, "allow": "0", "deny": str(deny)}]
    await fake.send_event("CHANNEL_UPDATE", channel)
    for _ in range(200):
        if bot.get_channel(channel_id).overwrites:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot never saw the channel's new permissions")


@pytest.mark.parametrize("deny", [SEND_MESSAGES, VIEW_CHANNEL], ids=["send_messages", "view_channel"])
async def test_an_alerts_channel_the_bot_cannot_post_in_is_refused_and_nothing_is_saved(bot, pixverse, deny):
    fake = pixverse
    await overwrite_everyone(bot, fake, CHANNEL_2_ID, deny)
    refused = await manager(fake, "pixverse-settings", {"alerts": CHANNEL_2_ID})
    assert refused.ephemeral and refused.content == (
        f"400 · The bot cannot post in <#{CHANNEL_2_ID}>: it needs View Channel and Send Messages there")
    assert (await bot.core.dispatcher.servers.get(str(GUILD_ID))).alerts_channel_id is None
    # The other channel, where @everyone may post, is taken.
    saved = await manager(fake, "pixverse-settings", {"alerts": CHANNEL_ID})
    assert saved.content.endswith(f"Alerts: <#{CHANNEL_ID}> (an account leaving rotation, and coming back)")

async def test_an_account_leaving_rotation_and_coming_back_is_told_once_each_in_the_alerts_channel(bot, pixverse):
    fake = pixverse
    await save_account(fake, TOKEN, CHANNEL_ID, 1)
    await manager(fake, "pixverse-settings", {"alerts": CHANNEL_2_ID})
    fake.pixverse_blocked_tokens[TOKEN] = 401
    assert word_of((await settled(await create(fake)))["content"]) == "failed"
    left = await fake.wait_for_channel_message(
        CHANNEL_2_ID, lambda m: m["author"]["id"] == str(fake.bot_user_id) and "left rotation" in m["content"])
    assert left["content"] == (
        f"⚠️ The PixVerse account of <#{CHANNEL_ID}> left rotation: Discord refused the account's token (401)\n"
        "No job goes to it until a server manager fixes it (a new token with /pixverse-account, or PixVerse's block"
        f" lifted) and runs `/pixverse-account-reset channel:{CHANNEL_ID}`.")
    assert left["mentions"] == [] and TOKEN not in left["content"]
    busy = await create(fake)  # refused: the account is out already, nothing new to tell
    assert busy.content.startswith("503 · ")
    await asyncio.sleep(1)
    assert len(alerts_in(fake, CHANNEL_2_ID)) == 1

    del fake.pixverse_blocked_tokens[TOKEN]
    await manager(fake, "pixverse-account-reset", {"channel": str(CHANNEL_ID)})
    back = await fake.wait_for_channel_message(
        CHANNEL_2_ID, lambda m: m["author"]["id"] == str(fake.bot_user_id) and "back in rotation" in m["content"])
    assert back["content"] == f"✅ The PixVerse account of <#{CHANNEL_ID}> is back in rotation."
    # A reset of an account that is in rotation already tells nothing.
    await manager(fake, "pixverse-account-reset", {"channel": str(CHANNEL_ID)})
    await asyncio.sleep(1)
    assert len(alerts_in(fake, CHANNEL_2_ID)) == 2
    assert alerts_in(fake, CHANNEL_ID) == []  # nothing in the account's own channel


async def test_pixverse_status_shows_accounts_the_queue_and_the_last_day(bot, pixverse):
    fake = pixverse
    fake.pixverse_moderated_words.add("forbidden")
    await save_account(fake, TOKEN, CHANNEL_ID, 2)
    assert word_of((await settled(await create(fake)))["content"]) == "completed"
    assert word_of((await settled(await create(fake, prompt="a forbidden fox")))["content"]) == "moderated"
    fake.pixverse_hold = True
    await create(fake, prompt="still running")
    await fake.wait_for_pixverse_held(1)
    assert (await member(fake, "pixverse-status")).content == "401 · Unauthorized"
    shown = await manager(fake, "pixverse-status")
    assert shown.ephemeral and shown.content == "PixVerse status: 1 accounts, 1 executing, 0 waiting"
    [embed] = shown.messages[-1]["embeds"]
    assert embed["description"] == f"**Accounts: 1**\n<#{CHANNEL_ID}> · 1/2 executing · in rotation"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Waiting: 0"] == "none"
    counts, median = fields["Last 24 hours"].split("\n")
    assert counts == "completed 1 · failed 0 · moderated 1 · cancelled 0 · timed out 0"
    assert median.startswith("median run time ") and median.endswith(" s")
    fake.pixverse_hold = False
    fake.pixverse_release()
