"""Every account command through real INTERACTION_CREATE payloads, replies read at the callback."""

from __future__ import annotations

import logging

import pytest

from bot.logs import MASK
from tests.conftest import TOKEN, TOKEN_2
from tests.e2e.conftest import (
    ACCOUNT_USER_ID,
    ADMIN_ID,
    CHANNEL_2_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    MEMBER_ID,
    OTHER_CHANNEL_ID,
    OTHER_GUILD_ID,
    SEND_MESSAGES,
    hold_the_database,
    start_bot,
    stop_bot,
)


def account_options(**overrides):
    options = {"discord": TOKEN, "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxjobs": 3}
    options.update(overrides)
    return {k: v for k, v in options.items() if v is not None}


async def run(fake, name, options=None, *, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID,
              permissions=MANAGE_GUILD):
    return await fake.invoke(
        name, options, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
    )


async def test_commands_are_registered_with_their_shapes(bot, fake):
    by_name = {c["name"]: c for c in fake.commands}
    assert set(by_name) == {
        "pixverse-account", "pixverse-accounts", "pixverse-account-delete", "pixverse-account-reset",
        "pixverse-create", "pixverse-create-single", "pixverse-animate", "pixverse-meme-face", "pixverse-button", "pixverse-jobs", "pixverse-job",
        "pixverse-cancel", "pixverse-api-token", "pixverse-api-token-revoke", "pixverse-settings", "pixverse-status",
    }
    account = by_name["pixverse-account"]
    options = {o["name"]: o for o in account["options"]}
    assert list(options) == ["discord", "server", "channel", "maxjobs"]
    assert all(o["required"] for o in options.values())
    assert [o["type"] for o in options.values()] == [3, 3, 3, 4]
    assert (options["maxjobs"]["min_value"], options["maxjobs"]["max_value"]) == (1, 10)
    assert options["server"]["autocomplete"] and options["channel"]["autocomplete"]
    for command in by_name.values():
        assert command["contexts"] == [0]  # guild only
        if command["name"].startswith(("pixverse-account", "pixverse-api-token", "pixverse-settings",
                                       "pixverse-status")):
            assert str(command["default_member_permissions"]) == str(MANAGE_GUILD)
        else:  # members' commands
            assert command.get("default_member_permissions") is None
    delete_options = by_name["pixverse-account-delete"]["options"]
    assert [(o["name"], o["required"]) for o in delete_options] == [("channel", True)]
    assert [(o["name"], o.get("required", False)) for o in by_name["pixverse-accounts"]["options"]] == [("channel", False)]


async def test_restart_with_unchanged_commands_does_not_sync_again(settings, fake, restore_discord_endpoints):
    bot, task = await start_bot(settings, fake)
    await stop_bot(bot, task)
    assert fake.command_syncs == 1
    bot, task = await start_bot(settings, fake)
    await stop_bot(bot, task)
    assert fake.command_syncs == 1


async def test_save_defers_checks_the_token_and_replies_masked(bot, fake):
    result = await run(fake, "pixverse-account", account_options(maxjobs=4))
    assert result.callback_type == 5 and result.ephemeral
    assert result.content == (
        f"Saved the PixVerse account configuration for <#{CHANNEL_ID}>.\n"
        f"server: `{GUILD_ID}`\nchannel: `{CHANNEL_ID}`\nmaxJobs: `4`\ndiscord: …1234"
    )
    assert TOKEN not in str(result.messages)
    checks = [r for r in fake.requests if r.path == "/users/@me" and r.headers.get("Authorization") == TOKEN]
    assert len(checks) == 1
    stored = await bot.core.accounts.repository.get(str(GUILD_ID), str(CHANNEL_ID))
    assert (stored.max_jobs, stored.discord_user_id) == (4, str(ACCOUNT_USER_ID))


SEED_ERRORS = [
    # (options, expected reply) in the seed's order of precedence: each case breaks every later rule too.
    (account_options(discord="   ", server="", channel="x", maxjobs=99), "400 · Required param discord is missing or empty"),
    (account_options(server="  ", channel="x", maxjobs=99), "400 · Required param server is missing or empty"),
    (account_options(channel=" ", maxjobs=99), "400 · Required param channel is missing or empty"),
    (account_options(channel="general", maxjobs=99), "400 · Required param channel (general) is not valid Discord channel id"),
    (account_options(channel=str(CHANNEL_2_ID), maxjobs=99),
     f"400 · Required param channel ({CHANNEL_2_ID}) not matching to /pixverse/account/{CHANNEL_ID}"),
    (account_options(maxjobs=12, server="x"), "400 · Required param maxJobs 12 can't be more that 10"),
    (account_options(maxjobs=0), "400 · Required param maxJobs 0 can't be less than 1"),
    (account_options(maxjobs=-5), "400 · Required param maxJobs -5 can't be less than 1"),
    (account_options(server="abc"), "400 · Required param server (abc) is not valid Discord server id"),
    (account_options(server=str(OTHER_GUILD_ID)),
     f"400 · Required param server ({OTHER_GUILD_ID}) not matching to this Discord server ({GUILD_ID})"),
]


@pytest.mark.parametrize(("options", "expected"), SEED_ERRORS)
async def test_seed_errors_through_discord(bot, fake, options, expected):
    result = await run(fake, "pixverse-account", options)
    assert result.callback_type == 4 and result.ephemeral
    assert result.content == expected
    assert await bot.core.accounts.repository.list(str(GUILD_ID)) == []


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("discord", "400 · Required param discord is missing or empty"),
        ("server", "400 · Required param server is missing or empty"),
        ("channel", "400 · Required param channel is missing or empty"),
        ("maxjobs", "400 · Required param maxJobs is missing or empty"),
    ],
)
async def test_options_a_modified_client_leaves_out_get_the_seed_texts(bot, fake, missing, expected):
    options = [o for o in _typed(account_options()) if o["name"] != missing]
    result = await run(fake, "pixverse-account", options)
    assert result.content == expected


def _typed(options: dict) -> list[dict]:
    return [{"name": k, "type": 4 if k == "maxjobs" else 3, "value": v} for k, v in options.items()]


async def test_wrongly_typed_option_values_get_a_400(bot, fake):
    options = _typed(account_options())
    options[3]["value"] = "lots"
    result = await run(fake, "pixverse-account", options)
    assert result.content == "400 · Required param maxJobs (lots) is not an integer"


async def test_hostile_values_get_400_and_nothing_is_written(bot, fake):
    for value in ["x" * 6000, "'; DROP TABLE accounts; --", "\x00\x07 control", "🙂" * 300]:
        result = await run(fake, "pixverse-account", account_options(channel=value))
        assert result.content.startswith("400 · Required param channel (")
        assert len(result.content) < 2000
    result = await run(fake, "pixverse-account", account_options(discord="bad token\nX-Injected: 1"))
    assert result.content.startswith("400 · Required param discord is not a valid Discord token")
    assert await bot.core.accounts.repository.list(str(GUILD_ID)) == []


async def test_rule_8_same_token_in_another_channel(bot, fake):
    assert (await run(fake, "pixverse-account", account_options())).content.startswith("Saved")
    result = await run(
        fake, "pixverse-account", account_options(channel=str(CHANNEL_2_ID)), channel_id=CHANNEL_2_ID
    )
    assert result.content == f"400 · Channel {CHANNEL_ID} configuration has same discord value"


async def test_rule_8_in_another_server_names_no_channel(bot, fake):
    await run(fake, "pixverse-account", account_options())
    result = await run(
        fake,
        "pixverse-account",
        account_options(server=str(OTHER_GUILD_ID), channel=str(OTHER_CHANNEL_ID)),
        guild_id=OTHER_GUILD_ID,
        channel_id=OTHER_CHANNEL_ID,
    )
    assert result.content == "400 · This Discord account is already configured in another server"


async def test_token_rejected_by_discord_stores_nothing(bot, fake):
    result = await run(fake, "pixverse-account", account_options(discord="dead-token-0000000000"))
    assert result.callback_type == 5
    assert result.content == (
        "400 · Required param discord is not a valid Discord token\nDiscord answered 401 to GET /users/@me"
    )
    assert await bot.core.accounts.repository.list(str(GUILD_ID)) == []


async def test_discord_down_during_token_check_is_503(bot, fake):
    fake.users_me_failure = 502
    result = await run(fake, "pixverse-account", account_options())
    assert result.content == (
        "503 · Discord could not be reached to check the discord token; nothing was saved, try again later\n"
        "Discord answered 502"
    )
    assert await bot.core.accounts.repository.list(str(GUILD_ID)) == []


@pytest.mark.parametrize(
    "command", ["pixverse-account", "pixverse-accounts", "pixverse-account-delete", "pixverse-account-reset"]
)
async def test_members_without_manage_server_are_unauthorized(bot, fake, command):
    options = account_options() if command == "pixverse-account" else {"channel": str(CHANNEL_ID)}
    result = await run(fake, command, options, user_id=MEMBER_ID, permissions=SEND_MESSAGES)
    assert result.content == "401 · Unauthorized"
    assert result.ephemeral


async def test_unauthorized_comes_before_validation(bot, fake):
    result = await run(fake, "pixverse-account", account_options(discord=""), permissions=0)
    assert result.content == "401 · Unauthorized"


@pytest.mark.parametrize("command", ["pixverse-account", "pixverse-accounts", "pixverse-account-delete"])
async def test_commands_in_a_dm_answer_guild_only(bot, fake, command):
    result = await fake.invoke(command, {"channel": str(CHANNEL_ID)}, guild_id=None, channel_id=CHANNEL_ID)
    assert result.content == "400 · This command works only in a server"


async def test_list_one_and_delete(bot, fake):
    assert (await run(fake, "pixverse-accounts")).content == "404 · Configuration not found"
    await run(fake, "pixverse-account", account_options(maxjobs=2))
    await run(
        fake,
        "pixverse-account",
        account_options(discord=TOKEN_2, channel=str(CHANNEL_2_ID), maxjobs=5),
        channel_id=CHANNEL_2_ID,
    )
    listing = (await run(fake, "pixverse-accounts")).content
    assert listing == (
        "PixVerse account configurations in this server: 2\n"
        f"<#{CHANNEL_ID}> · channel `{CHANNEL_ID}` · maxJobs `2` · discord …1234\n"
        f"<#{CHANNEL_2_ID}> · channel `{CHANNEL_2_ID}` · maxJobs `5` · discord …5678"
    )
    one = (await run(fake, "pixverse-accounts", {"channel": str(CHANNEL_2_ID)})).content
    assert one.endswith(f"<#{CHANNEL_2_ID}> · channel `{CHANNEL_2_ID}` · maxJobs `5` · discord …5678")
    assert (await run(fake, "pixverse-accounts", {"channel": "nope"})).content == (
        "400 · Required param channel (nope) is not valid Discord channel id"
    )

    deleted = await run(fake, "pixverse-account-delete", {"channel": str(CHANNEL_ID)})
    assert deleted.content.startswith(f"Deleted the PixVerse account configuration of <#{CHANNEL_ID}>")
    again = await run(fake, "pixverse-account-delete", {"channel": str(CHANNEL_ID)})
    assert again.content == "404 · Configuration not found"
    assert [c.channel_id for c in await bot.core.accounts.repository.list(str(GUILD_ID))] == [str(CHANNEL_2_ID)]


async def test_managers_commands_waiting_for_the_database_answer_privately_within_discords_3_s(bot, fake):
    """Discord refuses a first answer after 3 s: a write kept waiting past 2 s (another process
    writing the SQLite file) answers "thinking…" to the manager alone, then the result."""
    await run(fake, "pixverse-account", account_options(maxjobs=2))
    await bot.core.dispatcher.wait_idle()  # its start's recovery done: the held file waits for the command alone
    fake.interaction_answer_seconds = 3.0
    hold_the_database(bot.settings.database_path, 3.5)
    created = await run(fake, "pixverse-api-token")
    assert (created.callback_type, created.late_callbacks, created.ephemeral) == (5, 0, True)
    assert created.content.startswith("New HTTP API token for this server.")
    hold_the_database(bot.settings.database_path, 3.5)
    deleted = await run(fake, "pixverse-account-delete", {"channel": str(CHANNEL_ID)})
    assert (deleted.callback_type, deleted.late_callbacks, deleted.ephemeral) == (5, 0, True)
    assert deleted.content.startswith(f"Deleted the PixVerse account configuration of <#{CHANNEL_ID}>")
    assert await bot.core.accounts.repository.list(str(GUILD_ID)) == []


async def test_another_server_cannot_see_or_delete_this_servers_configuration(bot, fake):
    await run(fake, "pixverse-account", account_options())
    elsewhere = {"guild_id": OTHER_GUILD_ID, "channel_id": OTHER_CHANNEL_ID}
    assert (await run(fake, "pixverse-accounts", **elsewhere)).content == "404 · Configuration not found"
    assert (await run(fake, "pixverse-accounts", {"channel": str(CHANNEL_ID)}, **elsewhere)).content == (
        "404 · Configuration not found"
    )
    assert (await run(fake, "pixverse-account-delete", {"channel": str(CHANNEL_ID)}, **elsewhere)).content == (
        "404 · Configuration not found"
    )
    assert await bot.core.accounts.repository.get(str(GUILD_ID), str(CHANNEL_ID)) is not None


async def test_autocomplete_offers_this_server_and_channel(bot, fake):
    server = await fake.autocomplete(
        "pixverse-account", {"discord": "x"}, "server", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID
    )
    assert server == [{"name": f"Studio ({GUILD_ID})", "value": str(GUILD_ID)}]
    channel = await fake.autocomplete(
        "pixverse-account", {}, "channel", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID
    )
    assert [c["value"] for c in channel] == [str(CHANNEL_ID)]


async def test_delete_autocomplete_lists_configured_channels_for_managers_only(bot, fake):
    await run(fake, "pixverse-account", account_options())
    kw = {"guild_id": GUILD_ID, "channel_id": CHANNEL_ID}
    choices = await fake.autocomplete("pixverse-account-delete", {}, "channel", **kw)
    assert [c["value"] for c in choices] == [str(CHANNEL_ID)]
    assert await fake.autocomplete("pixverse-account-delete", {}, "channel", permissions=0, **kw) == []


async def test_broken_payload_gets_a_generic_500_and_the_bot_keeps_running(bot, fake, caplog):
    payload = fake.make_interaction("pixverse-accounts", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID)
    payload["data"]["options"] = "not-a-list"
    result = await fake.interact(payload)
    assert result.content == "500 · Something went wrong on our side; the error was logged. Please try again later"
    assert "Unexpected error" in caplog.text
    # Still answering.
    assert (await run(fake, "pixverse-accounts")).content == "404 · Configuration not found"


async def test_token_never_reaches_the_log_even_at_debug(bot, fake, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("discord", "aiosqlite", "bot", "cogs"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        await run(fake, "pixverse-account", account_options())
        await fake.autocomplete(
            "pixverse-account", {"discord": TOKEN}, "server", guild_id=GUILD_ID, channel_id=CHANNEL_ID
        )
        await run(fake, "pixverse-account", account_options(discord="not-shaped-like-a-token-zz"))
    finally:
        for name in ("discord", "aiosqlite", "bot", "cogs"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    text = caplog.text
    # The gateway dump of the interaction was logged, with its discord option masked.
    assert "INTERACTION_CREATE" in text and MASK in text
    assert TOKEN not in text and TOKEN[:-4] not in text
    assert "not-shaped-like-a-token-zz" not in text


async def test_maxjobs_range_offered_to_discord_follows_the_setting(tmp_path, fake, restore_discord_endpoints):
    from tests.e2e.conftest import make_settings

    bot, task = await start_bot(make_settings(tmp_path, fake, pixverse_max_concurrent_jobs=20), fake)
    try:
        account = next(c for c in fake.commands if c["name"] == "pixverse-account")
        maxjobs = next(o for o in account["options"] if o["name"] == "maxjobs")
        assert (maxjobs["min_value"], maxjobs["max_value"]) == (1, 20)
        result = await run(fake, "pixverse-account", account_options(maxjobs=21))
        assert result.content == "400 · Required param maxJobs 21 can't be more that 20"
    finally:
        await stop_bot(bot, task)
