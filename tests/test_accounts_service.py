"""Rule 8, the token check and storage: what is stored and what is not."""

from __future__ import annotations

import pytest

from bot.accounts.service import AccountService
from bot.errors import ApiError
from tests.conftest import CHANNEL, CHANNEL_2, CHANNEL_3, GUILD, OTHER_GUILD, TOKEN, TOKEN_2


async def save(service: AccountService, *, token=TOKEN, guild=GUILD, channel=CHANNEL, max_jobs=3):
    request = await service.prepare(
        {"discord": token, "server": guild, "channel": channel, "maxJobs": max_jobs},
        path_channel=channel,
        guild_id=guild,
    )
    return await service.save(request)


async def error_of(coro) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        await coro
    return info.value.code, info.value.error


async def test_save_stores_the_configuration_with_the_user_id(service, repository):
    config = await save(service, max_jobs=4)
    assert (config.guild_id, config.channel_id, config.max_jobs) == (GUILD, CHANNEL, 4)
    assert config.discord_user_id == "700000000000000001"
    assert config.masked_token == "…1234"
    assert await repository.get(GUILD, CHANNEL) == config
    assert await repository.decrypt_token(GUILD, CHANNEL) == TOKEN


async def test_update_same_channel_keeps_one_row(service, repository):
    first = await save(service, max_jobs=2)
    second = await save(service, max_jobs=5)
    assert [c.max_jobs for c in await repository.list(GUILD)] == [5]
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at


async def test_rule_8_same_token_in_another_channel_of_this_server(service, repository, checker):
    await save(service, channel=CHANNEL)
    calls = checker.calls
    assert await error_of(save(service, channel=CHANNEL_2)) == (
        400,
        f"Channel {CHANNEL} configuration has same discord value",
    )
    # Rule 8 comes before the token check: Discord was not asked again.
    assert checker.calls == calls
    assert await repository.get(GUILD, CHANNEL_2) is None


async def test_rule_8_in_another_server_does_not_name_the_channel(service, repository):
    await save(service, channel=CHANNEL)
    code, text = await error_of(save(service, guild=OTHER_GUILD, channel=CHANNEL_2))
    assert (code, text) == (400, "This Discord account is already configured in another server")
    assert CHANNEL not in text
    assert await repository.list(OTHER_GUILD) == []


async def test_rule_8_is_after_rule_7(service):
    await save(service, channel=CHANNEL)
    assert await error_of(save(service, channel=CHANNEL_2, max_jobs=11)) == (
        400,
        "Required param maxJobs 11 can't be more that 10",
    )


async def test_same_discord_user_with_another_token_is_refused(service, checker, repository):
    await save(service, channel=CHANNEL)
    checker.users["another-token-of-the-same-user-0000"] = checker.users[TOKEN]
    assert await error_of(save(service, token="another-token-of-the-same-user-0000", channel=CHANNEL_2)) == (
        400,
        f"Channel {CHANNEL} configuration has same discord account",
    )
    assert await repository.get(GUILD, CHANNEL_2) is None


async def test_rejected_token_stores_nothing(service, repository, checker):
    code, text = await error_of(save(service, token="not-a-real-token-123456"))
    assert (code, text) == (400, "Required param discord is not a valid Discord token")
    assert await repository.list(GUILD) == []


async def test_discord_unreachable_is_503_and_stores_nothing(service, repository, checker):
    checker.failure = ApiError(503, "Discord could not be reached")
    assert (await error_of(save(service)))[0] == 503
    assert await repository.list(GUILD) == []


async def test_deleting_frees_the_token(service, repository):
    await save(service, channel=CHANNEL)
    await service.delete(GUILD, CHANNEL)
    config = await save(service, channel=CHANNEL_2)
    assert config.channel_id == CHANNEL_2


async def test_not_found_texts(service):
    assert await error_of(service.list(GUILD)) == (404, "Configuration not found")
    assert await error_of(service.get(GUILD, CHANNEL)) == (404, "Configuration not found")
    assert await error_of(service.delete(GUILD, CHANNEL)) == (404, "Configuration not found")


async def test_servers_are_isolated(service, repository):
    await save(service, channel=CHANNEL, token=TOKEN)
    await save(service, guild=OTHER_GUILD, channel=CHANNEL_2, token=TOKEN_2)
    assert [c.channel_id for c in await service.list(GUILD)] == [CHANNEL]
    assert [c.channel_id for c in await service.list(OTHER_GUILD)] == [CHANNEL_2]
    # Another server cannot read or delete this server's channel.
    assert await error_of(service.get(OTHER_GUILD, CHANNEL)) == (404, "Configuration not found")
    assert await error_of(service.delete(OTHER_GUILD, CHANNEL)) == (404, "Configuration not found")
    assert await repository.get(GUILD, CHANNEL) is not None


async def test_upsert_cannot_take_over_another_servers_channel(service, repository):
    await save(service, channel=CHANNEL, token=TOKEN)
    # Bypass rule 5 (the HTTP API checks the channel against the server separately).
    request = await service.prepare(
        {"discord": TOKEN_2, "server": OTHER_GUILD, "channel": CHANNEL, "maxJobs": 1},
        path_channel=CHANNEL,
        guild_id=OTHER_GUILD,
    )
    assert await error_of(service.save(request)) == (
        400,
        f"Required param channel ({CHANNEL}) is configured by another Discord server",
    )
    stored = await repository.get(GUILD, CHANNEL)
    assert stored is not None and stored.max_jobs == 3
    assert await repository.decrypt_token(GUILD, CHANNEL) == TOKEN


async def test_concurrent_saves_of_one_token_store_it_once(service, repository):
    import asyncio

    requests = [
        await service.prepare(
            {"discord": TOKEN, "server": GUILD, "channel": channel, "maxJobs": 1}, path_channel=channel, guild_id=GUILD
        )
        for channel in (CHANNEL, CHANNEL_2, CHANNEL_3)
    ]
    results = await asyncio.gather(*(service.save(r) for r in requests), return_exceptions=True)
    saved = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(saved) == 1 and len(refused) == 2
    assert all(r.error.endswith("configuration has same discord value") or "same discord account" in r.error for r in refused)
    assert len(await repository.list(GUILD)) == 1


async def test_a_servers_list_is_read_again_after_any_commit_and_not_before(service, repository, database, monkeypatch):
    await save(service)
    reads = 0
    lookup_all = database.lookup_all

    async def counting(sql, params=()):
        nonlocal reads
        reads += "FROM accounts WHERE guild_id = ? ORDER BY" in sql  # the list's own query
        return await lookup_all(sql, params)

    monkeypatch.setattr(database, "lookup_all", counting)
    first = await service.list(GUILD)
    assert [c.channel_id for c in await service.list(GUILD)] == [CHANNEL]
    assert reads == 1  # nothing was committed between the two: the same answer, not read again
    first.clear()  # a caller changing its copy does not change what the next caller gets
    await save(service, token=TOKEN_2, channel=CHANNEL_2)
    assert [c.channel_id for c in await service.list(GUILD)] == [CHANNEL, CHANNEL_2]
    assert reads == 2
    await database.set_meta("unrelated", "x")  # any commit at all, even of another table
    await service.list(GUILD)
    assert reads == 3


async def test_a_servers_list_shows_what_another_process_committed(service, repository, database, cipher, tmp_path):
    await save(service)
    assert [c.max_jobs for c in await service.list(GUILD)] == [3]
    # Another bot process sharing the file: its own connection, its own repository.
    other = await type(database).open(tmp_path / "test.db")
    try:
        await other.execute("UPDATE accounts SET max_jobs = 7 WHERE channel_id = ?", (CHANNEL,))
    finally:
        await other.close()
    assert [c.max_jobs for c in await service.list(GUILD)] == [7]


class _BrokenListener:
    async def account_available(self, guild_id: str) -> None:
        raise RuntimeError("database is locked")

    async def account_removed(self, guild_id: str, channel_id: str, *, reason: str) -> None:
        raise RuntimeError("database is locked")


async def test_a_listener_failing_after_the_change_does_not_turn_it_into_an_error(service, repository, caplog):
    # The change is committed before the listeners hear of it: the caller is told it was made.
    service.listeners.append(_BrokenListener())
    config = await save(service, max_jobs=4)
    assert await repository.get(GUILD, CHANNEL) == config
    assert (await service.reset(GUILD, CHANNEL)).in_rotation
    await service.delete(GUILD, CHANNEL)
    assert await repository.get(GUILD, CHANNEL) is None
    failures = [r for r in caplog.records if "the change itself is saved" in r.getMessage()]
    assert len(failures) == 3 and all(r.levelname == "ERROR" for r in failures)


async def test_only_a_token_discord_accepted_is_registered_with_the_log_redactor(service, checker):
    """Registering every submitted value let a client grow the redactor without bound."""
    import secrets

    from bot.logs import MASK, redactor

    rejected = "rejected-" + secrets.token_hex(30)
    invalid = "invalid-" + secrets.token_hex(200)
    accepted = "accepted-" + secrets.token_hex(20)  # not token-shaped: only registration masks it
    checker.users[accepted] = "700000000000000009"
    before = len(redactor)
    assert (await error_of(save(service, token=rejected)))[0] == 400
    assert (await error_of(save(service, token=invalid, max_jobs=0)))[0] == 400
    assert len(redactor) == before
    assert redactor.redact(f"x {rejected} y") == f"x {rejected} y"
    await save(service, token=accepted)
    assert len(redactor) == before + 1
    assert redactor.redact(f"x {accepted} y") == f"x {MASK} y"
