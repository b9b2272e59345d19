"""Events: one line per happening, with stable keys, as text and as JSON, never a token."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random

import pytest

from bot.accounts.service import AccountService
from bot.dispatch.backends.base import JobUpdate, SubmitError
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import JobStatus, Verb
from bot.events import Events, render
from bot.logs import MASK, RedactingFilter, formatter_for, register_secrets
from tests.conftest import CHANNEL, GUILD, TOKEN
from tests.dispatch_support import Clock, ManualBackend, add_account, jobs_of

MEMBER = "950000000000000001"
ASKED_IN = "960000000000000001"
BODY = {"prompt": "a red fox", "style": "Realistic"}
JOB_KEYS = ["job", "server", "verb", "account"]


class Captured:
    """The lines of the ``bot.events`` logger (and any other given), through the bot's own handler."""

    def __init__(self, log_format: str, *loggers: str) -> None:
        self.format = log_format
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(RedactingFilter())
        self.handler.setFormatter(formatter_for(log_format))
        self.loggers = [logging.getLogger(name) for name in ("bot.events", *loggers)]
        self._levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)

    def close(self) -> None:
        for logger, level in zip(self.loggers, self._levels):
            logger.removeHandler(self.handler)
            logger.setLevel(level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line]

    def events(self) -> list[tuple[str, dict]]:
        """(name, keys) of every event line, read back from the output itself."""
        found = []
        for line in self.lines():
            if self.format == "json":
                record = json.loads(line)
                if record["event"] is not None:
                    assert record["logger"] == "bot.events" and record["level"] == "INFO"
                    assert record["message"].startswith(record["event"] + " ")
                    keys = {k: v for k, v in record.items() if k not in ("ts", "level", "logger", "event", "message")}
                    found.append((record["event"], keys))
            elif " bot.events: " in line:  # the bot's text format: time, level, logger, then the event
                assert " INFO " in line
                found.append(_parse_text(line.partition(" bot.events: ")[2]))
        return found

    def names(self) -> list[str]:
        return [name for name, _ in self.events()]


# Keys whose text is a whole number; every other bare value but null, true, false and decimals is
# text (ids are written bare: server=123).
NUMBER_KEYS = {"max_jobs", "position", "count", "retry_after", "attempt"}


def _bare(key: str, raw: str):
    if raw in ("null", "true", "false"):
        return json.loads(raw)
    if key in NUMBER_KEYS or (key.endswith("_s") and raw.replace(".", "", 1).isdigit()):
        return json.loads(raw)
    return raw


def _parse_text(line: str) -> tuple[str, dict]:
    """A text event line (``name key=value …``) back into its keys."""
    name, _, rest = line.partition(" ")
    keys: dict = {}
    decoder = json.JSONDecoder()
    position = 0
    while position < len(rest):
        key, _, tail = rest[position:].partition("=")
        start = position + len(key) + 1
        if tail.startswith('"'):
            value, end = decoder.raw_decode(rest, start)
        else:
            end = rest.find(" ", start)
            end = len(rest) if end < 0 else end
            value = _bare(key.strip(), rest[start:end])
        keys[key.strip()] = value
        position = end + 1
    return name, keys


@pytest.fixture(params=["text", "json"])
def captured(request):
    lines = Captured(request.param)
    yield lines
    lines.close()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def dispatcher(database, repository, events):
    backend = ManualBackend()
    d = Dispatcher(jobs_of(database), repository, backend, queue_size=2, rng=random.Random(7), clock=Clock(),
                   overload_retry_delay=0, events=events)
    yield d
    await d.close()


async def submit(dispatcher: Dispatcher):
    placed = await dispatcher.submit(guild_id=GUILD, requester_id=MEMBER, request_channel_id=ASKED_IN,
                                     verb=Verb.CREATE, body=BODY)
    await dispatcher.wait_idle()
    return placed


def by_name(captured: Captured, name: str) -> list[dict]:
    return [keys for event, keys in captured.events() if event == name]


def assert_no_token(captured: Captured, *tokens: str) -> None:
    for token in (TOKEN, *tokens):
        assert token not in captured.text
    assert MASK not in captured.text  # nothing secret was even near a line


async def test_a_jobs_whole_life_is_one_line_per_event(captured, dispatcher, repository):
    await add_account(repository, GUILD, CHANNEL, max_jobs=1, user="1")
    clock = dispatcher.clock
    first = (await submit(dispatcher)).job
    clock.now += 2.5
    second = (await submit(dispatcher)).job  # the account is full: it waits
    await dispatcher.job_update(first.job_id, JobUpdate(JobStatus.STARTED, message_id="m1"))
    clock.now += 30
    await dispatcher.backend.complete(first.job_id)
    await dispatcher.wait_idle()

    assert captured.names() == ["job.created", "job.started", "job.created", "job.queued", "job.completed",
                                "job.started"]
    created = by_name(captured, "job.created")
    assert created[0] == {"job": first.job_id, "server": GUILD, "verb": "create", "account": CHANNEL,
                          "queued": False}
    assert created[1] == {"job": second.job_id, "server": GUILD, "verb": "create", "account": None,
                          "queued": True}
    assert by_name(captured, "job.queued") == [{"job": second.job_id, "server": GUILD, "verb": "create",
                                                "position": 1}]
    started = by_name(captured, "job.started")
    assert started[0] == {"job": first.job_id, "server": GUILD, "verb": "create", "account": CHANNEL, "wait_s": 0.0,
                          "attempt": 1}
    # The second waited from its creation until the first's slot was free: 30 s.
    assert started[1] == {"job": second.job_id, "server": GUILD, "verb": "create", "account": CHANNEL,
                          "wait_s": 30.0, "attempt": 1}
    assert by_name(captured, "job.completed") == [{"job": first.job_id, "server": GUILD, "verb": "create",
                                                   "account": CHANNEL, "wait_s": 0.0, "run_s": 32.5}]
    assert_no_token(captured, f"token-for-{CHANNEL}")
    if captured.format == "text":
        assert captured.lines()[-2].endswith(f" INFO     bot.events: job.completed job={first.job_id} server={GUILD} verb=create"
                                        f" account={CHANNEL} wait_s=0.0 run_s=32.5")


@pytest.mark.parametrize("ending", ["failed", "moderated", "cancelled", "timed_out"])
async def test_every_other_ending_is_its_own_event_with_the_reason(captured, dispatcher, repository, ending):
    await add_account(repository, GUILD, CHANNEL, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    dispatcher.clock.now += 12
    if ending == "failed":
        await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.FAILED, error="PixVerse failed the job"))
        reason = "PixVerse failed the job"
    elif ending == "moderated":
        await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.MODERATED, error="Moderated by PixVerse"))
        reason = "Moderated by PixVerse"
    elif ending == "cancelled":
        await dispatcher.cancel(job.job_id, guild_id=GUILD, user_id=MEMBER, is_manager=False)
        reason = f"Cancelled by <@{MEMBER}>"
    else:
        dispatcher.clock.now += dispatcher.job_timeout
        await dispatcher.sweep()
        reason = "PixVerse did not finish the job within 900 seconds"
    await dispatcher.wait_idle()
    assert captured.names() == ["job.created", "job.started", f"job.{ending}"]
    [ended] = by_name(captured, f"job.{ending}")
    assert ended == {"job": job.job_id, "server": GUILD, "verb": "create", "account": CHANNEL, "wait_s": 0.0,
                     "run_s": 12.0 + (dispatcher.job_timeout if ending == "timed_out" else 0), "reason": reason}
    # A job ends once: a late answer from PixVerse adds no line.
    await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.COMPLETED, message_id="late"))
    assert len(captured.events()) == 3
    assert_no_token(captured, f"token-for-{CHANNEL}")


async def test_an_account_leaves_rotation_once_and_comes_back(captured, database, repository, checker, events):
    service = AccountService(repository, checker, max_concurrent_jobs=10, events=events)
    backend = ManualBackend()
    dispatcher = Dispatcher(jobs_of(database), repository, backend, rng=random.Random(7), clock=Clock(),
                            overload_retry_delay=0, events=events)
    service.listeners.append(dispatcher)
    request = {"discord": TOKEN, "server": GUILD, "channel": CHANNEL, "maxJobs": 2}
    try:
        await service.save(await service.prepare(request, path_channel=CHANNEL, guild_id=GUILD))
        jobs = [(await submit(dispatcher)).job for _ in range(2)]
        # PixVerse's answers to both jobs say the account is refused: it leaves once.
        for job in jobs:
            await dispatcher.job_update(job.job_id, JobUpdate(account_rejected="Discord answered 401"))
        await dispatcher.wait_idle()
        await service.reset(GUILD, CHANNEL)
        await service.reset(GUILD, CHANNEL)  # already back: said, but not as a return
        # Leaves again (its submission refused), then a save puts it back.
        backend.fail_next = SubmitError("Discord answered 401 for the account's token", account_rejected=True)
        await submit(dispatcher)
        await service.save(await service.prepare(request, path_channel=CHANNEL, guild_id=GUILD))
        await service.delete(GUILD, CHANNEL)
    finally:
        await dispatcher.close()

    account_events = [(name, keys) for name, keys in captured.events() if name.startswith("account.")]
    assert account_events == [
        ("account.saved", {"server": GUILD, "channel": CHANNEL, "max_jobs": 2, "created": True,
                           "back_in_rotation": False}),
        ("account.out_of_rotation", {"server": GUILD, "channel": CHANNEL, "reason": "Discord answered 401"}),
        ("account.reset", {"server": GUILD, "channel": CHANNEL, "back_in_rotation": True}),
        ("account.reset", {"server": GUILD, "channel": CHANNEL, "back_in_rotation": False}),
        ("account.out_of_rotation", {"server": GUILD, "channel": CHANNEL,
                                     "reason": "Discord answered 401 for the account's token"}),
        ("account.saved", {"server": GUILD, "channel": CHANNEL, "max_jobs": 2, "created": False,
                           "back_in_rotation": True}),
        ("account.deleted", {"server": GUILD, "channel": CHANNEL}),
    ]
    # The jobs the refusal ended are told as failed, each once.
    assert [keys["reason"] for keys in by_name(captured, "job.failed")][:2] == [
        "The PixVerse account left rotation: Discord answered 401"] * 2
    assert_no_token(captured)


async def test_three_failures_in_a_row_take_the_account_out_once(captured, dispatcher, repository):
    await add_account(repository, GUILD, CHANNEL, max_jobs=5, user="1")
    for _ in range(3):
        job = (await submit(dispatcher)).job
        await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.FAILED, error="PixVerse failed"))
    assert captured.names() == ["job.created", "job.started", "job.failed"] * 3 + ["account.out_of_rotation"]
    assert by_name(captured, "account.out_of_rotation") == [
        {"server": GUILD, "channel": CHANNEL, "reason": "3 jobs in a row failed"}]


async def test_a_failure_beyond_the_threshold_while_out_adds_no_event(captured, dispatcher, repository):
    await add_account(repository, GUILD, CHANNEL, max_jobs=5, user="1")
    jobs = [(await submit(dispatcher)).job for _ in range(5)]
    for job in jobs:  # five jobs running at once fail one after the other
        await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.FAILED, error="PixVerse failed"))
    assert len(by_name(captured, "account.out_of_rotation")) == 1


async def test_api_tokens_are_named_by_an_id_never_shown(captured, database, events):
    from bot.api_tokens import ApiTokens, token_id

    tokens = ApiTokens(database.stores(None).tokens, events)
    token = await tokens.create(GUILD, MEMBER)
    assert await tokens.guild_of(token) == GUILD
    assert await tokens.revoke_all(GUILD) == 1
    assert captured.events() == [
        ("api_token.created", {"server": GUILD, "token_id": token_id(token), "by": MEMBER}),
        ("api_token.revoked", {"server": GUILD, "count": 1}),
    ]
    assert token not in captured.text and token[4:] not in captured.text


async def test_subscribers_get_every_event_and_a_failing_one_is_only_logged(caplog):
    events = Events()
    seen: list[tuple[str, dict]] = []
    slow_done = asyncio.Event()

    def plain(name, fields):
        seen.append((name, fields))

    async def slow(name, fields):
        await asyncio.sleep(0.01)
        slow_done.set()

    def broken(name, fields):
        raise RuntimeError("subscriber bug")

    async def broken_later(name, fields):
        raise RuntimeError("async subscriber bug")

    unsubscribe = events.subscribe(plain)
    for callback in (slow, broken, broken_later):
        events.subscribe(callback)
    with caplog.at_level(logging.INFO, logger="bot.events"):
        events.emit("account.reset", server=GUILD, channel=CHANNEL, back_in_rotation=True)  # never raises
        await events.close()
    assert slow_done.is_set()
    assert seen == [("account.reset", {"server": GUILD, "channel": CHANNEL, "back_in_rotation": True})]
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 2 and all("Event subscriber" in r.getMessage() for r in failures)
    # The record carries the event and its keys for any formatter.
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "account.reset"]
    assert (line.server, line.channel, line.event_fields["back_in_rotation"]) == (GUILD, CHANNEL, True)
    unsubscribe()
    events.emit("account.deleted", server=GUILD, channel=CHANNEL)
    assert len(seen) == 1


async def test_close_cancels_a_subscriber_that_does_not_finish():
    events = Events()
    cancelled = asyncio.Event()

    async def forever(name, fields):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    events.subscribe(forever)
    events.emit("account.deleted", server=GUILD, channel=CHANNEL)
    await events.close(grace=0.05)
    assert cancelled.is_set()


def test_text_values_are_bare_or_quoted():
    assert render("job.failed", {"job": "job:a-b_c", "server": "1", "account": None, "queued": False, "wait_s": 1.5,
                                 "reason": 'PixVerse said "no" = refused'}) == (
        'job.failed job=job:a-b_c server=1 account=null queued=false wait_s=1.5'
        ' reason="PixVerse said \\"no\\" = refused"')
    assert _parse_text(render("x", {"reason": 'a "b" c', "count": 3, "t": True, "server": "12"})) == (
        "x", {"reason": 'a "b" c', "count": 3, "t": True, "server": "12"})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_in_an_event_field_or_a_traceback_is_masked(log_format):
    secret = "registered-event-secret-0123456789"
    register_secrets(secret)
    lines = Captured(log_format, "test.events.traceback")
    try:
        Events().emit("job.failed", job="job:x", server=GUILD, verb="create", account=CHANNEL,
                      reason=f"PixVerse echoed {secret}")
        # A field set on a record by other code than the hub (extra=) is masked on the handler too.
        logging.getLogger("test.events.traceback").info("plain line", extra={"detail": f"with {secret}"})
        try:
            raise ValueError(f"bad {secret}")
        except ValueError:
            logging.getLogger("test.events.traceback").exception("it failed")
    finally:
        lines.close()
    assert secret not in lines.text
    if log_format == "json":
        event, plain, failure = (json.loads(line) for line in lines.lines())
        assert event["event"] == "job.failed" and event["reason"] == f"PixVerse echoed {MASK}"
        assert list(event)[:5] == ["ts", "level", "logger", "event", "message"]
        assert plain["event"] is None and plain["message"] == "plain line" and plain["detail"] == f"with {MASK}"
        assert failure["level"] == "ERROR" and failure["message"] == "it failed" and failure["event"] is None
        assert f"ValueError: bad {MASK}" in failure["exc_info"] and "Traceback" in failure["exc_info"]
    else:
        assert f'reason="PixVerse echoed {MASK}"' in lines.text
        assert f"ValueError: bad {MASK}" in lines.text
