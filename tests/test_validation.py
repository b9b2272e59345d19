"""The seed's rules, texts asserted literally, in order of precedence."""

from __future__ import annotations

import pytest

from bot.accounts.validation import validate_account, validate_channel_param
from bot.errors import ApiError
from tests.conftest import CHANNEL, GUILD, TOKEN


def body(**overrides):
    base = {"discord": TOKEN, "server": GUILD, "channel": CHANNEL, "maxJobs": 3}
    base.update(overrides)
    return base


def error_of(payload, *, path_channel=CHANNEL, guild_id=GUILD, limit=10) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        validate_account(payload, path_channel=path_channel, guild_id=guild_id, max_concurrent_jobs=limit)
    return info.value.code, info.value.error


def test_valid_request_is_trimmed_and_typed():
    request = validate_account(
        body(discord=f"  {TOKEN}\n", server=f" {GUILD} ", maxJobs="4"),
        path_channel=CHANNEL,
        guild_id=GUILD,
        max_concurrent_jobs=10,
    )
    assert (request.discord, request.server, request.channel, request.max_jobs) == (TOKEN, GUILD, CHANNEL, 4)
    assert TOKEN not in repr(request)


@pytest.mark.parametrize("missing", [None, "", "   ", "\t\n"])
def test_rule_1_discord_missing_or_empty(missing):
    # Everything else is wrong too: rule 1 still wins.
    payload = {"discord": missing, "server": "", "channel": "x", "maxJobs": 99}
    assert error_of(payload) == (400, "Required param discord is missing or empty")


def test_rule_1_absent_key():
    assert error_of({}) == (400, "Required param discord is missing or empty")


def test_rule_2_server_missing_before_channel():
    assert error_of(body(server="  ", channel=None, maxJobs=None)) == (400, "Required param server is missing or empty")


def test_rule_3_channel_missing():
    assert error_of(body(channel=" ", maxJobs=None)) == (400, "Required param channel is missing or empty")


@pytest.mark.parametrize("channel", ["abc", "1234567890123456", "123456789012345678901", "12345678901234567x", "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨"])
def test_rule_4_channel_not_a_snowflake(channel):
    assert error_of(body(channel=channel, maxJobs=None)) == (
        400,
        f"Required param channel ({channel}) is not valid Discord channel id",
    )


def test_rule_4_long_value_is_cut_to_100_characters():
    channel = "y" * 6000
    code, text = error_of(body(channel=channel))
    assert (code, text) == (400, f"Required param channel ({'y' * 100}) is not valid Discord channel id")


def test_rule_5_channel_must_be_the_path_channel():
    other = "999999999999999999"
    assert error_of(body(channel=other, maxJobs=None)) == (
        400,
        f"Required param channel ({other}) not matching to /pixverse/account/{CHANNEL}",
    )


@pytest.mark.parametrize("missing", [None, "", "  "])
def test_rule_6_max_jobs_missing(missing):
    assert error_of(body(maxJobs=missing, server="not-a-snowflake")) == (400, "Required param maxJobs is missing or empty")


@pytest.mark.parametrize(("value", "shown"), [(11, "11"), (12, "12"), (10**30, str(10**30)), ("12", "12"), (12.5, "12.5")])
def test_rule_7_max_jobs_more_than_limit(value, shown):
    assert error_of(body(maxJobs=value, server="x")) == (400, f"Required param maxJobs {shown} can't be more that 10")


def test_rule_7_follows_the_configured_limit():
    assert error_of(body(maxJobs=5), limit=4) == (400, "Required param maxJobs 5 can't be more that 4")


@pytest.mark.parametrize(("value", "shown"), [(0, "0"), (-3, "-3"), (-(10**30), str(-(10**30)))])
def test_max_jobs_below_one(value, shown):
    assert error_of(body(maxJobs=value)) == (400, f"Required param maxJobs {shown} can't be less than 1")


@pytest.mark.parametrize(("value", "shown"), [("abc", "abc"), (2.5, "2.5"), (True, "true"), ([3], "[3]"), ({"a": 1}, '{"a": 1}')])
def test_max_jobs_not_an_integer(value, shown):
    assert error_of(body(maxJobs=value)) == (400, f"Required param maxJobs ({shown}) is not an integer")


@pytest.mark.parametrize(("value", "shown"), [
    ("9" * 5000, "9" * 100),  # more digits than int() converts: cut to 100 like every echo
    ("+0009" + "9" * 5000, "9" * 100),
    ("1e400", "1e400"),
    (float("inf"), "inf"),  # JSON's 1e400
], ids=["5000 nines", "plus, zeros then 5000 nines", "1e400 as text", "1e400 in JSON"])
def test_max_jobs_too_large_to_convert_is_still_more_than_the_limit(value, shown):
    assert error_of(body(maxJobs=value)) == (400, f"Required param maxJobs {shown} can't be more that 10")


@pytest.mark.parametrize(("value", "shown"), [
    ("-" + "9" * 5000, "-" + "9" * 99), ("-1e400", "-1e400"), ("0" * 5000, "0"), ("-" + "0" * 5000 + "5", "-5"),
], ids=["minus 5000 nines", "-1e400", "5000 zeros", "minus, 5000 zeros then 5"])
def test_max_jobs_below_one_however_long_is_less_than_one(value, shown):
    assert error_of(body(maxJobs=value)) == (400, f"Required param maxJobs {shown} can't be less than 1")


@pytest.mark.parametrize("value", ["1_0", "\uff11", "\u0663", "0x3", "3.0.0", "nan", "inf", "Infinity"])
def test_max_jobs_text_is_ascii_decimal_only(value):
    assert error_of(body(maxJobs=value)) == (400, f"Required param maxJobs ({value}) is not an integer")


@pytest.mark.parametrize("value", ["0" * 5000 + "5", "+" + "0" * 5000 + "5", " 005 "],
                         ids=["5000 zeros then 5", "plus, 5000 zeros then 5", "spaced 005"])
def test_max_jobs_with_leading_zeros_is_its_number(value):
    request = validate_account(body(maxJobs=value), path_channel=CHANNEL, guild_id=GUILD, max_concurrent_jobs=10)
    assert request.max_jobs == 5


def test_max_jobs_integral_float_is_accepted():
    request = validate_account(body(maxJobs=3.0), path_channel=CHANNEL, guild_id=GUILD, max_concurrent_jobs=10)
    assert request.max_jobs == 3


def test_server_must_be_a_snowflake():
    assert error_of(body(server="my server")) == (400, "Required param server (my server) is not valid Discord server id")


def test_server_must_be_this_server():
    other = "222222222222222222"
    assert error_of(body(server=other)) == (
        400,
        f"Required param server ({other}) not matching to this Discord server ({GUILD})",
    )


@pytest.mark.parametrize("name", ["discord", "server", "channel"])
@pytest.mark.parametrize("value", [["a"], {"x": 1}, 1.5, True])
def test_wrong_types_are_a_clear_400(name, value):
    assert error_of(body(**{name: value})) == (400, f"Required param {name} must be a string")


def test_ids_sent_as_json_numbers_are_accepted():
    request = validate_account(
        body(server=int(GUILD), channel=int(CHANNEL)), path_channel=CHANNEL, guild_id=GUILD, max_concurrent_jobs=10
    )
    assert (request.server, request.channel) == (GUILD, CHANNEL)


@pytest.mark.parametrize(
    "value",
    ["'; DROP TABLE accounts; --", "\x00\x01\x02", "🙂" * 50, "Robert'); --", "\u202e" * 10],
)
def test_hostile_strings_get_a_400_not_an_exception(value):
    for field in ("server", "channel"):
        code, _ = error_of(body(**{field: value}))
        assert code == 400


def test_channel_param_of_get_and_delete():
    assert validate_channel_param(f" {CHANNEL} ") == CHANNEL
    with pytest.raises(ApiError) as info:
        validate_channel_param("general")
    assert info.value.error == "Required param channel (general) is not valid Discord channel id"
    with pytest.raises(ApiError) as info:
        validate_channel_param(None)
    assert info.value.error == "Required param channel is missing or empty"


def test_fit_lines_keeps_a_discord_message_under_its_limit():
    from bot.slash import fit_lines

    lines = [f"line {n:04d} " + "x" * 90 for n in range(100)]
    text = fit_lines("header", lines)
    assert len(text) <= 2000
    kept = text.splitlines()
    assert kept[0] == "header" and kept[1] == lines[0]
    assert kept[-1] == f"… and {100 - (len(kept) - 2)} more"
    assert fit_lines("header", lines[:3]) == "\n".join(["header", *lines[:3]])


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("server", "Required param server (…1234) is not valid Discord server id"),
        ("channel", "Required param channel (…1234) is not valid Discord channel id"),
    ],
)
def test_a_token_pasted_into_another_field_is_not_echoed(field, expected):
    payload = body(**{field: TOKEN})
    code, text = error_of(payload, path_channel=TOKEN if field == "channel" else CHANNEL)
    assert (code, text) == (400, expected)
    assert TOKEN[:-4] not in text


def test_a_token_pasted_as_a_job_id_is_not_echoed():
    from bot.dispatch.validation import validate_job_id

    with pytest.raises(ApiError) as info:
        validate_job_id(f"job {TOKEN}")
    assert info.value.error == "Required param jobid (job …1234) is not a valid job id"
