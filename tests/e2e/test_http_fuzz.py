"""A schema-driven fuzz of the HTTP API: schemathesis against the OpenAPI document the bot serves.

What runs: the real bot (PixverseBot with its cogs) against the fake Discord and the fake
PixVerse, its HTTP API on a free loopback port, one API token from ``/pixverse-api-token``,
accounts configured through ``POST /v1/pixverse/account/<channel>`` and one job run to
completion, so the GET paths return data (a third account is there for DELETE to remove).
schemathesis generates requests for every operation of the document, positive and negative
(path parameters, query parameters and JSON bodies of the wrong type, missing, out of range,
malformed content types, unexpected headers) and, in its coverage phase, methods the
document does not list for a path. For every response:

* the status is below 500 (a 5xx, a timeout or a dropped connection fails with a curl line
  that reproduces the request: put ``Bearer <an API token>`` where it shows ``[Filtered]``);
* an error (4xx) is JSON ``{"error": str, "code": int}`` with ``code`` equal to the status
  (the documented extra fields, ``errorDetails`` and ``executingJobs``, may stand beside);
* the body contains no secret: no account's Discord token, the API token, nor the
  token-encryption key.

After the run the bot still answers ``/healthz`` 200, the first two accounts are still listed, every
route of the app was fuzzed (positive and, where it takes input, negative data) and the
bot logged no ERROR.

How it is wired, and why:

* The bot runs in a thread. schemathesis's pytest integration runs a *synchronous* test per
  generated case and sends the request with ``requests``, blocking the caller; the bot is
  asyncio, and pytest-asyncio's loop runs only while an async test awaits, so a bot started
  by the async fixtures of ``tests/e2e`` would be frozen while schemathesis waits for its
  answer. :class:`BotThread` runs the fake Discord and the bot on their own event loop in a
  daemon thread, started and stopped by a module-scoped fixture with the same
  ``start_bot``/``stop_bot`` as the other e2e tests.
* The schema is built at import from ``bot.web.openapi.openapi_document()`` and
  ``test_the_bot_serves_the_fuzzed_document`` checks that the running bot's
  ``GET /openapi.json`` is exactly that document (so what is fuzzed is what the bot
  serves), and GET /openapi.json is itself one of the fuzzed operations. It is not loaded
  from the live URL because schemathesis's fixture-based loader (``from_fixture``) reads
  ``Node._nodeid``, which pytest 9.2 removed (what ``pip install -e '.[test]'`` installs
  today), and a module-level schema must exist before any fixture runs. ``from_url`` would
  also leave out the operation that served the document.
* The API token is known only once the bot runs, so each call gets it (``case.call(headers=…)``)
  instead of the schema's config, and schemathesis generates no credentials of its own
  (``with-security-parameters`` off): left on, a third of its cases drop or garble the
  header and the budget is spent on 401s. The 401 path is covered by
  ``test_http_api.py::test_missing_or_unknown_tokens_are_401``.
* Bounded and deterministic: ``deterministic`` generation (Hypothesis ``derandomize``) with a
  fixed seed, ``FUZZ_EXAMPLES`` fuzzing examples per operation on top of the coverage
  phase's fixed cases, no example database, no stateful phase, and no feedback of response
  values into generation. The same 1,200-odd requests are sent on every run (only the
  finished job's random id differs); the module takes some 10-15 s on 2 cores.
* Real ids: ``flatmap`` hooks let a share of the generated channel paths, job ids and button
  job ids be real ones (a configured channel for GET, a third account for DELETE, another
  server's channel for both, the finished job), so the 200/204 paths, the isolation 404s and
  the state checks (409 already completed, a button press) are reached, not only 400s.
* A generated replyUrl that names a host is pointed at the bot's own port: a finished job's
  POST never leaves the loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord

from bot.web.routes import ROUTES
from bot.web.openapi import openapi_document
from tests.conftest import TOKEN, TOKEN_2
from tests.e2e.conftest import (
    ACCOUNT_2_USER_ID,
    ACCOUNT_USER_ID,
    BOT_TOKEN,
    CHANNEL_2_ID,
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    OTHER_GUILD_ID,
    make_settings,
    start_bot,
    stop_bot,
)
from tests.e2e.fake_discord import FakeDiscord
from tests.e2e.test_http_api import api_token, free_port

SEED = 20240607
FUZZ_EXAMPLES = 100  # per operation, fuzzing phase; the coverage phase adds its own fixed cases
REQUEST_TIMEOUT = 10.0  # seconds: a request not answered by then is a hang, and fails the test
ERROR_EXTRAS = {"errorDetails", "executingJobs"}  # documented fields an error may carry beside error/code
# A third account, in a third channel of the server, for the fuzzed DELETE to remove (204, then 404).
CHANNEL_3_ID = 810000000000000009
TOKEN_3 = "third-account-token-qqqqqqqqqqqqqqqqqqqqqqqq9012"
ACCOUNT_3_USER_ID = 840000000000000009
SECRETS = (TOKEN, TOKEN_2, TOKEN_3)


class BotLog(logging.Handler):
    """The bot thread's log records at WARNING and above: an ERROR (a failed task, a logged traceback) fails the run."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread.ident:
            self.records.append(record)

    def lines(self, level: int) -> list[str]:
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records if r.levelno >= level]


class BotThread:
    """The fake Discord and the real bot on their own event loop, in a daemon thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_token = ""
        self.encryption_key = ""
        self.job_id = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-bot", daemon=True)
        self.logged = BotLog(self._thread)

    def start(self) -> None:
        logging.getLogger().addHandler(self.logged)
        self._thread.start()
        if not self._ready.wait(timeout=60):
            raise RuntimeError("the bot did not start within 60 s")
        if self._error is not None:
            raise RuntimeError("the bot did not start") from self._error
        from tests.hostile.figures import rss_mb

        self.rss_at_start = rss_mb()  # the bot shares this process: its growth is the process's

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        logging.getLogger().removeHandler(self.logged)
        if self._thread.is_alive():
            raise RuntimeError("the bot did not stop within 30 s")
        if self._error is not None:
            raise RuntimeError("the bot failed") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        fake = FakeDiscord(bot_token=BOT_TOKEN)
        fake.add_guild(GUILD_ID, name="Studio", channel_ids=[CHANNEL_ID, CHANNEL_2_ID, CHANNEL_3_ID])
        fake.add_guild(OTHER_GUILD_ID, name="Elsewhere", channel_ids=[OTHER_CHANNEL_ID])
        fake.add_user_token(TOKEN, user_id=ACCOUNT_USER_ID, username="pixverse-one")
        fake.add_user_token(TOKEN_2, user_id=ACCOUNT_2_USER_ID, username="pixverse-two")
        fake.add_user_token(TOKEN_3, user_id=ACCOUNT_3_USER_ID, username="pixverse-three")
        fake.add_pixverse(step_delay=0.02)
        await fake.start()
        try:
            settings = make_settings(self.tmp_path, fake, http_port=self.port)
            self.encryption_key = settings.token_encryption_key.get_secret_value()
            bot, task = await start_bot(settings, fake)
            try:
                self.api_token = await api_token(fake, GUILD_ID, CHANNEL_ID)
                await self._seed_data()
                self._ready.set()
                await self._stop.wait()
            finally:
                await stop_bot(bot, task)
        finally:
            await fake.stop()

    async def _seed_data(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_token}"}
        async with aiohttp.ClientSession(self.base, headers=headers) as session:

            async def configure(channel: int, token: str, max_jobs: int) -> None:
                body = {"discord": token, "server": str(GUILD_ID), "channel": str(channel), "maxJobs": max_jobs}
                async with session.post(f"/v1/pixverse/account/{channel}", json=body) as response:
                    assert response.status == 204, await response.text()

            await configure(CHANNEL_ID, TOKEN, 3)
            await configure(CHANNEL_2_ID, TOKEN_2, 2)
            async with session.post("/v1/pixverse/create", json={"prompt": "a fox", "style": "Anime"}) as response:
                assert response.status == 200, await response.text()
                self.job_id = (await response.json())["jobid"]
            deadline = time.monotonic() + 20
            while True:
                async with session.get("/v1/pixverse/jobs/", params={"jobid": self.job_id}) as response:
                    if (await response.json())["status"] == "completed":
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the seed job {self.job_id} did not complete")
                await asyncio.sleep(0.05)
            # After the job: it ran on account 1 or 2, never on the one the fuzzed DELETE removes.
            await configure(CHANNEL_3_ID, TOKEN_3, 1)


@pytest.fixture(scope="module")
def running_bot(tmp_path_factory) -> Iterator[BotThread]:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    bot = BotThread(tmp_path_factory.mktemp("fuzz"))
    try:
        bot.start()
        yield bot
    finally:
        try:
            bot.stop()
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


class Record:
    """What the fuzz sent, per operation (checked after the run): kinds of data, and statuses."""

    def __init__(self) -> None:
        # "positive"/"negative": data of that mode with the documented method; "other method": the
        # coverage phase's probe with a method the document does not list for the path.
        self.kinds: dict[str, set[str]] = defaultdict(set)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.requests = 0

    def add(self, case, status: int) -> None:
        label = case.operation.label
        if case.method.upper() != case.operation.method.upper():
            self.kinds[label].add("other method")
        elif case.meta is not None:
            self.kinds[label].add(case.meta.generation.mode.value)
        self.statuses[label][status] += 1
        self.requests += 1

    def summary(self) -> str:
        return "\n".join(
            f"  {label}: {', '.join(sorted(self.kinds[label]))}; statuses {dict(sorted(self.statuses[label].items()))}"
            for label in sorted(self.statuses)
        )


RECORD = Record()


def fuzz_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "request-timeout": REQUEST_TIMEOUT,
        "suppress-health-check": ["all"],
        # with-security-parameters off: every call carries the real token (below), none a generated one.
        "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "deterministic": True,
                       "with-security-parameters": False},
        "phases": {
            "examples": {"enabled": False},  # the document has no examples
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True, "extra-data-sources": {"responses": False}},
            "stateful": {"enabled": False},
        },
    })


class Live:
    """What the hooks and the test need from the running bot (set by the ``running_bot`` fixture)."""

    bot: BotThread | None = None


def real_values_hooks(schema) -> None:
    """Lets some generated values be real ids, so the paths behind the 400s and 404s are reached too."""

    def some_real(value: dict, key: str, *real: str) -> st.SearchStrategy:
        return st.sampled_from([value, value] + [{**value, key: item} for item in real])

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        if isinstance(path_parameters, dict) and "channel" in path_parameters:
            method = context.operation.method.upper()
            if method == "GET":  # a configured channel (200), another server's (404)
                return some_real(path_parameters, "channel", str(CHANNEL_ID), str(OTHER_CHANNEL_ID))
            if method == "DELETE":  # the third account (204, then 404), another server's (404)
                return some_real(path_parameters, "channel", str(CHANNEL_3_ID), str(OTHER_CHANNEL_ID))
        return st.just(path_parameters)

    @schema.hook
    def flatmap_query(context, query):
        if isinstance(query, dict) and "jobid" in query and Live.bot is not None:
            return some_real(query, "jobid", Live.bot.job_id)
        return st.just(query)

    @schema.hook
    def flatmap_body(context, body):
        if isinstance(body, dict) and context.operation.path.endswith("/button") and Live.bot is not None:
            return some_real(body, "jobid", Live.bot.job_id)
        return st.just(body)


DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=fuzz_config())
real_values_hooks(schema)


@pytest.fixture(scope="module")
def live(running_bot: BotThread) -> Iterator[BotThread]:
    Live.bot = running_bot
    yield running_bot
    Live.bot = None


def keep_on_loopback(case, bot: BotThread) -> None:
    """A generated replyUrl naming a host becomes the bot's own port: a finished job is POSTed nowhere else."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("replyUrl"), str):
        try:
            parsed = urlsplit(body["replyUrl"])
            named = parsed.scheme in ("http", "https") and bool(parsed.hostname)
        except ValueError:
            named = False
        if named:
            case.body = {**body, "replyUrl": f"{bot.base}/fuzz-reply"}


def test_the_bot_serves_the_fuzzed_document(live: BotThread):
    answer = requests.get(f"{live.base}/openapi.json", timeout=REQUEST_TIMEOUT)
    assert answer.status_code == 200 and answer.json() == DOCUMENT


@schema.parametrize()
def test_fuzz_no_5xx_json_errors_no_secrets(case, live: BotThread):
    keep_on_loopback(case, live)
    headers = {"Authorization": f"Bearer {live.api_token}"}
    label = f"{case.method.upper()} {case.formatted_path}"
    try:
        response = case.call(base_url=live.base, headers=headers, timeout=REQUEST_TIMEOUT)
    except requests.RequestException as exc:
        curl = case.as_curl_command(headers=headers, base_url=live.base)
        raise AssertionError(f"{label}: no answer ({type(exc).__name__}: {exc})\n    {curl}") from exc
    RECORD.add(case, response.status_code)
    repro = (f"\nReproduce with:\n    {case.as_curl_command(headers=headers, base_url=live.base)}"
             f"\nAnswer: {response.status_code} {response.text[:500]}")

    assert response.status_code < 500, f"{label}: server error{repro}"
    for secret in (*SECRETS, live.api_token, live.encryption_key):
        assert secret not in response.text, f"{label}: a secret is in the response{repro}"
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), f"{label}: error is not JSON{repro}"
        body = json.loads(response.text)
        assert isinstance(body, dict), f"{label}: error body is not an object{repro}"
        assert isinstance(body.get("error"), str) and body["error"], f"{label}: no error text{repro}"
        assert type(body.get("code")) is int and body["code"] == response.status_code, f"{label}: code{repro}"
        assert set(body) <= {"error", "code"} | ERROR_EXTRAS, f"{label}: undocumented error fields{repro}"


def test_after_the_fuzz_the_bot_is_healthy_and_every_operation_was_fuzzed(live: BotThread):
    if RECORD.requests == 0:
        pytest.skip("the fuzz test did not run in this session: run the whole module")
    warned = live.logged.lines(logging.WARNING)
    print(f"\n{RECORD.requests} requests\n{RECORD.summary()}\nbot log, WARNING and above: {len(warned)} lines")
    print("\n".join(f"  {line[:160]}" for line in warned[:10]))
    answer = requests.get(f"{live.base}/healthz", timeout=REQUEST_TIMEOUT)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok", "code": 200})
    listed = requests.get(f"{live.base}/v1/pixverse/account",
                          headers={"Authorization": f"Bearer {live.api_token}"}, timeout=REQUEST_TIMEOUT)
    assert listed.status_code == 200 and {str(CHANNEL_ID), str(CHANNEL_2_ID)} <= set(listed.json())
    assert not any(secret in listed.text for secret in SECRETS)

    from tests.hostile.figures import Row, record, rss_mb

    server_errors = sum(n for statuses in RECORD.statuses.values() for status, n in statuses.items() if status >= 500)
    row = Row("schemathesis: every operation, positive and negative", requests=RECORD.requests,
              server_errors=server_errors, rss_growth_mb=rss_mb() - live.rss_at_start)
    row.notes.append(f"{len(RECORD.statuses)} operations; non-JSON errors would have failed the fuzz test itself")
    record(row)

    operations = [result.ok() for result in schema.get_all_operations()]
    # Every route the app serves is an operation of the document, and every one was fuzzed.
    assert {op.label for op in operations} == {f"{method} {path}" for method, path, _ in ROUTES}
    for op in operations:
        expected = {"positive"}
        if op.body or any(param.name != "Authorization" for param in op.iter_parameters()):
            expected.add("negative")  # data of the wrong type, missing, out of range
        assert RECORD.kinds[op.label] >= expected, f"{op.label} was not fuzzed with {expected}:\n{RECORD.summary()}"
    for path in {op.path for op in operations}:  # the probe with undocumented methods runs once per path
        assert any("other method" in RECORD.kinds[op.label] for op in operations if op.path == path), path
    errors = live.logged.lines(logging.ERROR)
    assert not errors, "the bot logged errors during the fuzz:\n" + "\n".join(errors)
