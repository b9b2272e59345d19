"""The HTTP API against the running bot: the seed's own examples, every error, isolation."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import aiohttp
import pytest

from bot.discord_bot import PixverseBot
from bot.dispatch.models import API_REQUESTER
from bot.errors import StoreBusy, StoreUnavailable
from bot.store.sqlite.tokens import ApiTokenRepository
from tests.conftest import TOKEN, TOKEN_2
from tests.net import free_port
from tests.receiver import reply_receiver
from tests.e2e.test_jobs_e2e import until
from tests.e2e.conftest import (
    ADMIN_ID,
    CHANNEL_2_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    OTHER_GUILD_ID,
    make_settings,
    start_bot,
    stop_bot,
)

NOT_FOUND = "Configuration not found. To create configuration use pixverse/account/channel."



@dataclass
class Api:
    base: str
    token: str
    other_token: str
    session: aiohttp.ClientSession
    bot: object

    async def call(self, method: str, path: str, *, token: str | None = "default", body=None, data=None, headers=None):
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        if data is not None and isinstance(data, bytes):
            headers.setdefault("Content-Type", "application/json")  # raw bytes meant as JSON
        kwargs = {"json": body} if body is not None else {"data": data} if data is not None else {}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None), response


async def api_token(fake, guild_id: int, channel_id: int) -> str:
    result = await fake.invoke("pixverse-api-token", None, guild_id=guild_id, channel_id=channel_id, user_id=ADMIN_ID,
                               permissions=MANAGE_GUILD)
    assert result.ephemeral
    return re.search(r"```\n(pvb_[A-Za-z0-9_\-]+)\n```", result.content).group(1)


@pytest.fixture
async def api(tmp_path, fake, restore_discord_endpoints):
    fake.add_pixverse(step_delay=0.02)
    port = free_port()
    bot, task = await start_bot(make_settings(tmp_path, fake, http_port=port), fake)
    session = aiohttp.ClientSession()
    try:
        yield Api(
            f"http://127.0.0.1:{port}", await api_token(fake, GUILD_ID, CHANNEL_ID),
            await api_token(fake, OTHER_GUILD_ID, OTHER_CHANNEL_ID), session, bot,
        )
    finally:
        await session.close()
        await stop_bot(bot, task)


def account_body(**overrides):
    body = {"discord": TOKEN, "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 3}
    body.update(overrides)
    return body


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by .ci/run")
async def test_the_seeds_curl_example_as_written(api):
    # The seed's curl, with the base URL, token and values filled in; -sS -w prints the status.
    command = [
        "curl", "-sS", "-w", "%{http_code}",
        "-H", "Accept: application/json",
        "-H", "Content-Type: application/json",
        "-H", f"Authorization: Bearer {api.token}",
        "-X", "POST", f"{api.base}/v1/pixverse/account/{CHANNEL_ID}",
        "-d", json.dumps({"discord": TOKEN, "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 10}),
    ]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert out.decode() == "204"
    status, body, _ = await api.call("GET", f"/v1/pixverse/account/{CHANNEL_ID}")
    assert (status, body) == (200, {"discord": "…1234", "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 10})


SEED_PYTHON = textwrap.dedent('''
    import requests
    server = "{server}"
    channel = "{channel}"
    apiUrl = f"{base}/v1/pixverse/account/{{channel}}"
    token = "{token}"
    discord = "{discord}"
    maxJobs = 10
    headers = {{
        "Content-Type": "application/json",
        "Authorization" : f"Bearer {{token}}"
    }}
    body = {{
        "discord": f"{{discord}}",
        "server": f"{{server}}",
        "channel": f"{{channel}}",
        "maxJobs": maxJobs
    }}
    response = requests.post(apiUrl, headers=headers, json=body)
    print(response.status_code)
    print(response, response.json())
''')


def run_seed_python(api, channel: int) -> subprocess.CompletedProcess:
    code = SEED_PYTHON.format(server=GUILD_ID, channel=channel, base=api.base, token=api.token, discord=TOKEN)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


async def test_the_seeds_python_example_as_written(api):
    # The seed's Python example, values filled in (one line added to print the status first).
    first = await asyncio.to_thread(run_seed_python, api, CHANNEL_ID)
    assert first.stdout.splitlines()[0] == "204"
    # The seed's own last line calls response.json() on the empty 204: requests raises, as it
    # would against useapi.net itself.
    assert "JSONDecodeError" in first.stderr
    second = await asyncio.to_thread(run_seed_python, api, CHANNEL_2_ID)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "400",
        f"<Response [400]> {{'error': 'Channel {CHANNEL_ID} configuration has same discord value', 'code': 400}}",
    ]


SEED_ERRORS = [
    (account_body(discord=" ", server="", channel="x", maxJobs=99), "Required param discord is missing or empty"),
    (account_body(server=None, channel="x"), "Required param server is missing or empty"),
    (account_body(channel=""), "Required param channel is missing or empty"),
    (account_body(channel="123"), "Required param channel (123) is not valid Discord channel id"),
    (account_body(channel=str(CHANNEL_2_ID)),
     f"Required param channel ({CHANNEL_2_ID}) not matching to /pixverse/account/{CHANNEL_ID}"),
    (account_body(maxJobs=None), "Required param maxJobs is missing or empty"),
    (account_body(maxJobs=11), "Required param maxJobs 11 can't be more that 10"),
    (account_body(maxJobs=0), "Required param maxJobs 0 can't be less than 1"),
    (account_body(maxJobs="three"), "Required param maxJobs (three) is not an integer"),
    (account_body(server=str(OTHER_GUILD_ID)),
     f"Required param server ({OTHER_GUILD_ID}) not matching to this Discord server ({GUILD_ID})"),
    (account_body(discord="dead-token-value-000"), "Required param discord is not a valid Discord token"),
]


@pytest.mark.parametrize(("body", "error"), SEED_ERRORS)
async def test_every_error_text_through_http(api, body, error):
    status, answer, response = await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=body)
    assert status == 400 and answer["error"] == error and answer["code"] == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert await api.bot.core.accounts.repository.list(str(GUILD_ID)) == []


async def test_channel_must_be_one_the_bot_can_see_in_the_tokens_server(api):
    unknown = "899999999999999999"
    status, answer, _ = await api.call("POST", f"/v1/pixverse/account/{unknown}", body=account_body(channel=unknown))
    assert (status, answer["error"]) == (
        400, f"Required param channel ({unknown}) is not a channel of this Discord server that the bot can see"
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer pvb_unknown"},
     {"Authorization": "Bearer pvb_\udcff\udcfe".encode("utf-8", "surrogateescape").decode("latin-1")}],
)
async def test_missing_or_unknown_tokens_are_401(api, headers):
    status, answer, _ = await api.call("GET", "/v1/pixverse/account", token=None, headers=headers)
    assert (status, answer) == (401, {"error": "Unauthorized", "code": 401})
    # The seed's endpoint itself, before its body is read: nothing is stored.
    status, answer, _ = await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", token=None, headers=headers,
                                       body=account_body())
    assert (status, answer) == (401, {"error": "Unauthorized", "code": 401})
    assert (await api.call("GET", "/v1/pixverse/account"))[:2] == (404, {"error": NOT_FOUND, "code": 404})


async def test_fields_the_seed_does_not_name_are_ignored(api):
    """A useapi client may send more than the four fields: they are neither refused nor stored."""
    body = {**account_body(), "replyUrl": "https://example.com/hook", "extra": {"nested": [1, 2]}}
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=body))[0] == 204
    status, answer, _ = await api.call("GET", f"/v1/pixverse/account/{CHANNEL_ID}")
    assert status == 200 and answer == {"discord": "…1234", "server": str(GUILD_ID), "channel": str(CHANNEL_ID),
                                        "maxJobs": 3}


async def test_revoked_tokens_are_401(api, fake):
    # Used once first, so the token's server is in the lookup cache when it is revoked.
    assert (await api.call("GET", "/v1/pixverse/account"))[0] == 404
    revoked = await fake.invoke("pixverse-api-token-revoke", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID,
                                user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    assert revoked.content == "Revoked 1 HTTP API token of this server."
    status, answer, _ = await api.call("GET", "/v1/pixverse/account")
    assert (status, answer) == (401, {"error": "Unauthorized", "code": 401})
    # The other server's token is untouched.
    assert (await api.call("GET", "/v1/pixverse/account", token=api.other_token))[0] == 404


async def test_servers_are_isolated_and_both_interfaces_see_the_same_data(api, fake):
    assert (await api.call("GET", "/v1/pixverse/account"))[:2] == (404, {"error": NOT_FOUND, "code": 404})
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body()))[0] == 204
    # Written through HTTP, visible in Discord.
    listing = await fake.invoke("pixverse-accounts", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ADMIN_ID)
    assert f"<#{CHANNEL_ID}> · channel `{CHANNEL_ID}` · maxJobs `3` · discord …1234" in listing.content
    # Written in Discord, visible through HTTP.
    saved = await fake.invoke(
        "pixverse-account", {"discord": TOKEN_2, "server": str(GUILD_ID), "channel": str(CHANNEL_2_ID), "maxjobs": 5},
        guild_id=GUILD_ID, channel_id=CHANNEL_2_ID, user_id=ADMIN_ID,
    )
    assert saved.content.startswith("Saved")
    status, answer, _ = await api.call("GET", "/v1/pixverse/account")
    assert status == 200 and answer == {
        str(CHANNEL_ID): {"discord": "…1234", "server": str(GUILD_ID), "channel": str(CHANNEL_ID), "maxJobs": 3},
        str(CHANNEL_2_ID): {"discord": "…5678", "server": str(GUILD_ID), "channel": str(CHANNEL_2_ID), "maxJobs": 5},
    }
    assert TOKEN not in json.dumps(answer)
    # The other server's token sees and deletes nothing of this server.
    other = api.other_token
    assert (await api.call("GET", "/v1/pixverse/account", token=other))[:2] == (404, {"error": NOT_FOUND, "code": 404})
    assert (await api.call("GET", f"/v1/pixverse/account/{CHANNEL_ID}", token=other))[0] == 404
    assert (await api.call("DELETE", f"/v1/pixverse/account/{CHANNEL_ID}", token=other))[0] == 404
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", token=other,
                           body=account_body(server=str(OTHER_GUILD_ID))))[1]["error"] == (
        f"Required param channel ({CHANNEL_ID}) is not a channel of this Discord server that the bot can see"
    )
    # Deleting through HTTP.
    assert (await api.call("DELETE", f"/v1/pixverse/account/{CHANNEL_ID}"))[0] == 204
    assert (await api.call("DELETE", f"/v1/pixverse/account/{CHANNEL_ID}"))[:2] == (404, {"error": NOT_FOUND, "code": 404})


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "error"),
    [
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b"{not json", 400, "Request body is not valid JSON"),
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b"[1, 2]", 400, "Request body must be a JSON object"),
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b"\xff\xfe", 400, "Request body is not valid JSON"),
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b"{\"a\": \"" + b"x" * 70_000 + b"\"}", 413,
         "Request body is larger than 65536 bytes"),
        ("GET", "/v1/pixverse/nothing-here", None, 404, "Not found: /v1/pixverse/nothing-here"),
        ("PUT", "/v1/pixverse/account", None, 405, "Method PUT is not allowed on /v1/pixverse/account"),
        ("GET", "/v1/pixverse/account/general", None, 400, "Required param channel (general) is not valid Discord channel id"),
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400,
         "Request body is not valid JSON"),
        ("GET", "/v1/pixverse/jobs/?jobid=a&jobid=b", None, 400, "Required param jobid is given more than once"),
        # A lone surrogate is not text: it would fail in hashing, SQLite or the answer's encoding.
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b'{"discord": "tok\\ud800en", "server": "1"}', 400,
         "Request body is not valid JSON"),
        ("POST", "/v1/pixverse/create", b'{"prompt": "a \\uDFFF cat", "style": "Anime"}', 400,
         "Request body is not valid JSON"),
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b'{"discord": "tok\xed\xa0\x80en", "server": "1"}', 400,
         "Request body is not valid JSON"),  # a surrogate encoded in the bytes (CESU-8), not escaped
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", '{"discord": "t"}'.encode("utf-16"), 400,
         "Request body is not valid JSON"),  # JSON bodies are UTF-8
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b'\xef\xbb\xbf{"discord": " "}', 400,
         "Required param discord is missing or empty"),  # a UTF-8 byte order mark is ignored
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}", b'{"maxJobs": NaN}', 400, "Request body is not valid JSON"),
        # A surrogate pair is one character, echoed as such.
        ("POST", f"/v1/pixverse/account/{CHANNEL_ID}",
         b'{"discord": "t", "server": "1", "channel": "\\ud83e\\udd8a", "maxJobs": 1}', 400,
         "Required param channel (\U0001f98a) is not valid Discord channel id"),
    ],
)
async def test_bad_requests_get_json_errors(api, method, path, data, status, error):
    got, answer, response = await api.call(method, path, data=data)
    assert (got, answer) == (status, {"error": error, "code": status})
    assert response.headers["Content-Type"].startswith("application/json")


async def test_jobs_through_http_with_reply_url(api, fake):
    async with reply_receiver(status=200) as receiver:
        received = receiver.queue
        assert (await api.call("POST", "/v1/pixverse/create", body={"prompt": "a fox", "style": "Anime"}))[:2] == (
            404, {"error": "No PixVerse account is configured in this server; a server manager can add one with"
                           " /pixverse-account", "code": 404},
        )
        assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body(maxJobs=1)))[0] == 204
        bad = await api.call("POST", "/v1/pixverse/create", body={"prompt": "a fox", "style": "Anime",
                                                                   "replyUrl": "file:///etc/passwd"})
        assert bad[:2] == (400, {"error": "Param replyUrl (file:///etc/passwd) is not an http(s) URL", "code": 400})

        fake.pixverse_hold = True
        status, job, _ = await api.call("POST", "/v1/pixverse/create", body={
            "prompt": "a fox", "style": "Anime", "replyUrl": receiver.url, "replyRef": "ref-1"})
        assert status == 200 and job["status"] == "created" and job["verb"] == "pixverse-create"
        assert job["discord"] == "…1234" and job["replyRef"] == "ref-1" and job["code"] == 200
        await fake.wait_for_pixverse_held(1)
        assert (await api.call("GET", "/v1/pixverse/jobs"))[:2] == (200, [job["jobid"]])
        busy = await api.call("POST", "/v1/pixverse/create", body={"prompt": "another", "style": "Anime"})
        assert busy[0] == 429 and busy[1]["error"] == "All PixVerse accounts are busy"
        assert busy[1]["executingJobs"] == [job["jobid"]]

        fake.pixverse_hold = False
        fake.pixverse_release()
        # Each state, in order, each once: started, PixVerse's progress, and the result.
        calls = [await asyncio.wait_for(received.get(), timeout=10)]
        while calls[-1]["status"] != "completed":
            calls.append(await asyncio.wait_for(received.get(), timeout=10))
        assert [c["status"] for c in calls] == ["started", "progress", "completed"]
        assert all(c["jobid"] == job["jobid"] and c["replyRef"] == "ref-1" and c["code"] == 200 for c in calls)
        posted = calls[-1]
        assert len(posted["attachments"]) == 4 and posted["buttons"][:2] == ["U1", "U2"]
        assert TOKEN not in json.dumps(calls)
        # The receiver took the final state: recorded, so no later look posts it again.
        jobs = api.bot.core.dispatcher.jobs

        async def recorded() -> bool:
            return await jobs.final_not_shown(ended_before=time.time() + 1, ended_after=0) == []

        await until(recorded)
        status, shown, _ = await api.call("GET", f"/v1/pixverse/jobs/?jobid={job['jobid']}")
        assert status == 200 and shown["status"] == "completed" and shown["buttons"][:2] == ["U1", "U2"]
        # The other server cannot see it.
        assert (await api.call("GET", f"/v1/pixverse/jobs/?jobid={job['jobid']}", token=api.other_token))[0] == 404
        cancelled = await api.call("GET", f"/v1/pixverse/jobs/cancel/?jobid={job['jobid']}")
        assert cancelled[:2] == (409, {"error": f"Job {job['jobid']} is already completed", "code": 409})


async def test_head_is_answered_on_get_paths(api):
    async with api.session.head(api.base + "/healthz") as response:
        assert response.status == 200
    async with api.session.head(api.base + "/v1/pixverse/account") as response:
        assert response.status == 401


async def test_head_never_cancels_a_job(api, fake):
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body(maxJobs=1)))[0] == 204
    fake.pixverse_hold = True
    status, job, _ = await api.call("POST", "/v1/pixverse/create", body={"prompt": "a fox", "style": "Anime"})
    assert status == 200
    for path in ("/v1/pixverse/jobs/cancel/", "/v1/pixverse/jobs/cancel"):
        async with api.session.head(f"{api.base}{path}?jobid={job['jobid']}",
                                    headers={"Authorization": f"Bearer {api.token}"}) as response:
            assert (response.status, response.headers["Allow"]) == (405, "GET")
    status, shown, _ = await api.call("GET", f"/v1/pixverse/jobs/?jobid={job['jobid']}")
    assert status == 200 and shown["status"] != "cancelled"
    fake.pixverse_hold = False
    fake.pixverse_release()


async def test_saving_before_the_gateway_is_ready_is_a_503_not_a_wrong_channel(tmp_path, fake, restore_discord_endpoints):
    port = free_port()
    settings = make_settings(tmp_path, fake, http_port=port)
    bot = PixverseBot(settings, guild_ready_timeout=0.05)
    await bot.login(settings.discord_token.get_secret_value())  # setup_hook ran: the API listens, no gateway yet
    task = None
    try:
        token = await ApiTokenRepository(bot.core.db).create(str(GUILD_ID), str(ADMIN_ID))
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            async def post() -> tuple[int, object]:
                async with session.post(f"http://127.0.0.1:{port}/v1/pixverse/account/{CHANNEL_ID}",
                                        json=account_body(), headers=headers) as response:
                    return response.status, (await response.json() if response.status != 204 else None)

            assert await post() == (503, {"error": "The bot is not connected to Discord yet; try again in a moment",
                                          "code": 503})
            async with session.get(f"http://127.0.0.1:{port}/v1/pixverse/account", headers=headers) as response:
                assert response.status == 404  # nothing was stored
            task = asyncio.create_task(bot.connect(reconnect=False))
            await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
            assert await post() == (204, None)
    finally:
        await bot.close()
        if task is not None:
            await asyncio.wait_for(task, timeout=10)


async def test_saving_while_a_new_session_reloads_the_servers_is_a_503(api):
    # After a session that could not be resumed, discord.py's READY empties its cache and
    # dispatches "connect"; "ready" follows once the servers are streamed in again.
    api.bot.dispatch("connect")
    await asyncio.sleep(0)  # the listeners run as tasks
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body()))[:2] == (
        503, {"error": "The bot is not connected to Discord yet; try again in a moment", "code": 503})
    api.bot.dispatch("ready")
    await asyncio.sleep(0)
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body()))[0] == 204


async def test_healthz_and_openapi_need_no_token(api):
    status, body, _ = await api.call("GET", "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok", "code": 200})
    status, body, _ = await api.call("GET", "/openapi.json", token=None)
    assert status == 200 and body["openapi"].startswith("3.")


async def post_form(api, path: str, fields: list[tuple[str, str]], *, multipart: bool, files=()) -> tuple[int, dict | None]:
    """A POST as useapi's v1 clients send it: a form, every value text."""
    form = aiohttp.FormData(default_to_multipart=multipart)
    for name, value in fields:
        form.add_field(name, value)
    for name, filename, content in files:
        form.add_field(name, content, filename=filename, content_type="image/png")
    async with api.session.post(api.base + path, data=form, headers={"Authorization": f"Bearer {api.token}"}) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


async def test_forms_as_useapi_v1_clients_send_them(api):
    # An account saved from a multipart form: maxJobs as text, the empty fields absent.
    saved = await post_form(api, f"/v1/pixverse/account/{CHANNEL_ID}", [
        ("discord", TOKEN), ("server", str(GUILD_ID)), ("channel", str(CHANNEL_ID)), ("maxJobs", "3"),
    ], multipart=True)
    assert saved == (204, None)
    assert (await api.call("GET", f"/v1/pixverse/account/{CHANNEL_ID}"))[1]["maxJobs"] == 3

    # A job from a URL-encoded form: seed_value as text, empty fields absent.
    status, job = await post_form(api, "/v1/pixverse/create_single", [
        ("prompt", "a fox"), ("style", "Anime"), ("seed_value", "42"), ("negative_prompt", ""), ("character", ""),
        ("discord", ""), ("maxJobs", "3"), ("replyUrl", ""), ("replyRef", ""),
    ], multipart=False)
    assert status == 200, job
    stored = await api.bot.core.dispatcher.get(job["jobid"], str(GUILD_ID))
    assert stored.params == {"prompt": "a fox", "style": "Anime", "seed_value": 42}

    # The same rules as JSON numbers, with the same texts.
    assert await post_form(api, "/v1/pixverse/create_single", [
        ("prompt", "a fox"), ("style", "Anime"), ("seed_value", "4x2")], multipart=True) == (
        400, {"error": "Param seed_value (4x2) must be an integer from 0 to 2147483647", "code": 400})
    assert await post_form(api, "/v1/pixverse/create_single", [
        ("prompt", "a fox"), ("style", "Anime"), ("seed_value", "-1")], multipart=False) == (
        400, {"error": "Param seed_value (-1) must be an integer from 0 to 2147483647", "code": 400})
    assert await post_form(api, "/v1/pixverse/create", [("prompt", "a"), ("prompt", "b")], multipart=True) == (
        400, {"error": "Param prompt is given more than once", "code": 400})
    assert await post_form(api, "/v1/pixverse/create", [("style", "Anime")], multipart=True,
                           files=[("prompt", "p.png", b"\x89PNG\r\n")]) == (
        400, {"error": "Param prompt must be a text field, not a file", "code": 400})


async def test_a_placed_job_is_answered_even_if_its_accounts_token_cannot_be_read_for_the_mask(api, monkeypatch):
    """The job is committed before its answer reads the account (for the masked token): a database
    blip there must not answer 503 "try again", or the caller would place the job twice."""
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body(maxJobs=3)))[0] == 204
    dispatcher = api.bot.core.dispatcher

    placed = []
    for failure in (StoreUnavailable("ConnectionResetError"), StoreBusy("database is locked")):
        async def failing(*args, _failure=failure, **kwargs):
            raise _failure

        monkeypatch.setattr(dispatcher.accounts, "get", failing)
        status, job, _ = await api.call("POST", "/v1/pixverse/create", body={"prompt": "a fox", "style": "Anime"})
        monkeypatch.undo()
        assert status == 200 and job["status"] in ("created", "started") and "discord" not in job
        placed.append(job["jobid"])
    assert (await api.call("GET", "/v1/pixverse/jobs"))[:2] == (200, placed)
    again = (await api.call("GET", f"/v1/pixverse/jobs/?jobid={job['jobid']}"))[1]
    assert again["discord"].endswith(TOKEN[-4:])  # the mask, once the account can be read


async def test_one_servers_trickling_image_uploads_never_hold_back_another_servers(api):
    """Image bodies may take IMAGE_BODY_SECONDS on a slow uplink, and only IMAGE_BODIES_AT_ONCE (4)
    are read at once: four uploads trickling a byte at a time from one server's token used to hold
    every server's image uploads back for minutes. A server now has at most 2 of them read at once."""
    from bot.web.routes import IMAGE_BODIES

    port = int(api.base.rsplit(":", 1)[1])
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    part = ('--trickle\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + png

    async def post_image(token: str) -> tuple[int, str]:
        form = aiohttp.FormData()
        form.add_field("prompt", "it blinks")
        form.add_field("image", png, filename="a.png", content_type="image/png")
        async with api.session.post(api.base + "/v1/pixverse/animate", data=form,
                                    headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, (await response.json())["error"]

    alone = await post_image(api.other_token)  # the other server has no account: answered at once
    assert alone == (404, "No PixVerse account is configured in this server; a server manager can add one with"
                          " /pixverse-account")

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(f"POST /v1/pixverse/animate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.token}\r\n"
                     "Content-Type: multipart/form-data; boundary=trickle\r\nContent-Length: 5000000\r\n\r\n"
                     .encode() + part)
        while True:
            await writer.drain()
            await asyncio.sleep(0.5)
            writer.write(b"\0")

    writers = [(await asyncio.open_connection("127.0.0.1", port))[1] for _ in range(4)]
    trickles = [asyncio.create_task(trickle(writer)) for writer in writers]
    bodies = api.bot.core.http.app[IMAGE_BODIES]

    def servers(count: int):
        async def check() -> bool:
            return bodies.servers == count
        return check

    async def all_four_in() -> bool:
        return bodies.of(str(GUILD_ID)) == 4

    try:
        await until(all_four_in, timeout=5)
        assert bodies.reading_now == 2  # its share: the other two wait, holding none of the 4
        assert await asyncio.wait_for(post_image(api.other_token), timeout=5) == alone
        assert (bodies.of(str(GUILD_ID)), bodies.reading_now) == (4, 2)  # the trickles still hold theirs
    finally:
        for task in trickles:
            task.cancel()
        for writer in writers:
            writer.close()
    await until(servers(0), timeout=15)  # nothing kept for a server once its bodies end


async def test_a_form_whose_charset_makes_lone_surrogates_is_refused(api):
    """utf-7's ``+2AA-`` decodes to a lone surrogate, which no database or hash can take: a 400, not a 500."""
    async def post(data: bytes, content_type: str) -> tuple[int, dict]:
        async with api.session.post(api.base + "/v1/pixverse/create", data=data, headers={
                "Authorization": f"Bearer {api.token}", "Content-Type": content_type}) as response:
            return response.status, await response.json()

    form = "application/x-www-form-urlencoded; charset=utf-7"
    assert await post(b"prompt=a+2AA-b&style=Anime", form) == (400, {"error": "Param prompt must be text", "code": 400})
    assert await post(b"prompt=a+fox&style=Anime&reply+2AA-=x", form) == (
        400, {"error": "Request body is not a valid form", "code": 400})
    boundary = "b0undary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"style\"\r\n\r\nAnime\r\n"
                 f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n"
                 f"Content-Type: text/plain; charset=utf-7\r\n\r\na+2AA-b\r\n--{boundary}--\r\n").encode()
    for path in ("/v1/pixverse/create", "/v1/pixverse/meme_face"):  # parts read whole, and streamed with images
        async with api.session.post(api.base + path, data=multipart, headers={
                "Authorization": f"Bearer {api.token}",
                "Content-Type": f"multipart/form-data; boundary={boundary}"}) as response:
            assert (response.status, await response.json()) == (
                400, {"error": "Param prompt must be text", "code": 400}), path
    assert await api.bot.core.dispatcher.jobs.of_member(str(GUILD_ID), API_REQUESTER) == []


async def test_other_content_types_are_415_and_curls_default_still_works(api):
    status, answer, _ = await api.call("POST", "/v1/pixverse/create", data=b"prompt=a fox",
                                       headers={"Content-Type": "text/plain"})
    assert (status, answer) == (415, {"error": "Content-Type text/plain is not supported: send application/json,"
                                               " multipart/form-data or application/x-www-form-urlencoded",
                                      "code": 415})
    # curl -d '{…}' without a Content-Type header says it sends a form: the JSON is read as JSON.
    status, answer, _ = await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}",
                                       data=json.dumps(account_body()).encode(),
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, answer) == (204, None)


async def test_job_endpoints_answer_with_useapis_texts_and_a_429_says_when_to_retry(api, fake):
    assert (await api.call("GET", "/v1/pixverse/jobs/?jobid="))[:2] == (
        400, {"error": "Query param jobid not provided", "code": 400})
    assert (await api.call("GET", "/v1/pixverse/jobs/"))[:2] == (
        400, {"error": "Query param jobid not provided", "code": 400})
    assert (await api.call("GET", "/v1/pixverse/jobs/?jobid=job:nope"))[:2] == (
        404, {"error": "Unable to locate job job:nope", "code": 404})
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body(maxJobs=1)))[0] == 204
    fake.pixverse_hold = True
    status, job, _ = await api.call("POST", "/v1/pixverse/create", body={"prompt": "a fox", "style": "Anime"})
    assert status == 200 and job["code"] == 200
    await fake.wait_for_pixverse_held(1)
    # Busy: the body as before, and Retry-After, in whole seconds, at least 1.
    status, busy, response = await api.call("POST", "/v1/pixverse/create", body={"prompt": "b", "style": "Anime"})
    assert (status, busy) == (429, {"error": "All PixVerse accounts are busy", "code": 429,
                                    "errorDetails": f"1 executing: {job['jobid']}", "executingJobs": [job["jobid"]]})
    assert 1 <= int(response.headers["Retry-After"]) <= 900
    # Cancelled: useapi's short answer; the job then reads as cancelled, code 200 (not a failure).
    assert (await api.call("GET", f"/v1/pixverse/jobs/cancel/?jobid={job['jobid']}"))[:2] == (
        200, {"jobid": job["jobid"], "status": "cancelled", "code": 200})
    status, shown, _ = await api.call("GET", f"/v1/pixverse/jobs/?jobid={job['jobid']}")
    assert (status, shown["status"], shown["code"]) == (200, "cancelled", 200)
    fake.pixverse_hold = False
    fake.pixverse_release()


async def test_a_job_names_its_account_as_v1_clients_do(api, fake):
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body(maxJobs=2)))[0] == 204
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_2_ID}", body=account_body(
        discord=TOKEN_2, channel=str(CHANNEL_2_ID), maxJobs=3)))[0] == 204
    base = {"prompt": "a fox", "style": "Anime"}

    async def create(**fields):
        return (await api.call("POST", "/v1/pixverse/create", body={**base, **fields}))[:2]

    # channel (with or without server), or the account's token: that account, every time.
    for fields in ({"channel": str(CHANNEL_2_ID)}, {"channel": str(CHANNEL_2_ID), "server": str(GUILD_ID)},
                   {"discord": TOKEN_2, "maxJobs": "3"}, {"discord": TOKEN, "channel": str(CHANNEL_ID)}):
        status, job = await create(**fields)
        assert status == 200 and job["channel"] == fields.get("channel", str(CHANNEL_2_ID)), (fields, job)
        await api.call("GET", f"/v1/pixverse/jobs/cancel/?jobid={job['jobid']}")
    # maxJobs alone (sent on every request by v1 clients), and empty fields, choose nothing.
    status, job = await create(maxJobs=7, channel="", discord="")
    assert status == 200
    await api.call("GET", f"/v1/pixverse/jobs/cancel/?jobid={job['jobid']}")

    assert await create(channel="810000000000000099") == (404, {"error": "Configuration not found", "code": 404})
    assert await create(channel="general") == (
        400, {"error": "Param channel (general) is not valid Discord channel id", "code": 400})
    assert await create(channel=str(CHANNEL_ID), server="820000000000000001") == (
        400, {"error": f"Param server (820000000000000001) not matching to this Discord server ({GUILD_ID})",
              "code": 400})
    unknown = "MTExMTExMTExMTExMTExMTEx.GaBcDe.unknown-token-value-xyz9"
    status, answer = await create(discord=unknown)
    assert (status, answer) == (400, {"error": "Param discord is not the token of a PixVerse account configured in"
                                               " this server", "code": 400})
    assert await create(discord=TOKEN, channel=str(CHANNEL_2_ID)) == (
        400, {"error": f"Param discord is not the token of the PixVerse account of channel {CHANNEL_2_ID}",
              "code": 400})
    assert await create(discord=TOKEN_2, maxJobs=5) == (
        400, {"error": f"Param maxJobs (5) does not match the configuration of channel {CHANNEL_2_ID} (maxJobs 3)",
              "code": 400})
    # Full: that account's own 429, never another account.
    fake.pixverse_hold = True
    for _ in range(2):
        assert (await create(channel=str(CHANNEL_ID)))[0] == 200
    status, busy = await create(channel=str(CHANNEL_ID))
    assert (status, busy["error"]) == (429, f"The PixVerse account of channel {CHANNEL_ID} is busy")
    fake.pixverse_hold = False
    fake.pixverse_release()


async def test_a_button_press_as_v1_clients_send_it(api, fake):
    assert (await api.call("POST", f"/v1/pixverse/account/{CHANNEL_ID}", body=account_body(maxJobs=2)))[0] == 204
    status, job, _ = await api.call("POST", "/v1/pixverse/create", body={"prompt": "a fox", "style": "Anime"})
    assert status == 200

    async def completed() -> bool:
        return (await api.call("GET", f"/v1/pixverse/jobs/?jobid={job['jobid']}"))[1]["status"] == "completed"

    deadline = asyncio.get_running_loop().time() + 10
    while not await completed():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    press = {"jobid": job["jobid"], "button": "V1"}
    assert (await api.call("POST", "/v1/pixverse/button", body={**press, "prompt": "a red fox"}))[:2] == (
        400, {"error": "Param prompt cannot be sent with a button: PixVerse asks for it in a window that only the"
                       " pressing member's own Discord app receives", "code": 400})
    assert (await api.call("POST", "/v1/pixverse/button", body={**press, "discord": TOKEN_2}))[:2] == (
        400, {"error": f"Param discord is not the token of the PixVerse account that made job {job['jobid']}",
              "code": 400})
    # As v1 clients send it: an empty prompt, the account's own token, maxJobs (ignored).
    status, pressed, _ = await api.call("POST", "/v1/pixverse/button", body={
        **press, "prompt": "", "discord": TOKEN, "maxJobs": 9})
    assert status == 200 and pressed["verb"] == "pixverse-button" and pressed["channel"] == str(CHANNEL_ID)
