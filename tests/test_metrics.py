"""GET /metrics: Prometheus' text format, every family, counters that move by one per job."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.core import Core
from bot.logs import RedactingFilter, formatter_for
from bot.metrics import Metrics
from tests.conftest import CHANNEL, GUILD, TOKEN, FakeChecker
from tests.e2e.test_http_api import free_port
from tests.test_core import QuietDiscord, settings

FAMILIES = {
    "pixverse_jobs": "counter",
    "pixverse_job_run_seconds": "histogram",
    "pixverse_job_queue_wait_seconds": "histogram",
    "pixverse_jobs_executing": "gauge",
    "pixverse_jobs_waiting": "gauge",
    "pixverse_accounts": "gauge",
    "pixverse_placements": "counter",
    "pixverse_http_busy": "counter",
    "pixverse_http_requests": "counter",
    "pixverse_http_request_seconds": "histogram",
    "pixverse_gateway_latency_seconds": "gauge",
    "pixverse_db_operation_seconds": "histogram",
}
METRICS_TOKEN = "metrics-scrape-token-0123456789abcdef"


class Bot:
    """A Core serving the HTTP API on a free port, and a client for it."""

    def __init__(self, core: Core, session: aiohttp.ClientSession) -> None:
        self.core = core
        self.session = session
        self.base = f"http://127.0.0.1:{core.http.port}"
        self.api_token: str | None = None

    async def get(self, path: str, **headers: str) -> aiohttp.ClientResponse:
        async with self.session.get(self.base + path, headers=headers) as response:
            await response.read()
            return response

    async def scrape(self, **headers: str) -> dict[str, dict[tuple, float]]:
        """Every sample of /metrics, by sample name, then by sorted label items."""
        async with self.session.get(self.base + "/metrics", headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "text/plain"
            text = await response.text()
        samples: dict[str, dict[tuple, float]] = {}
        self.families = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    async def create(self, **body) -> aiohttp.ClientResponse:
        async with self.session.post(self.base + "/v1/pixverse/create",
                                     json={"prompt": "a red fox", "style": "Realistic", **body},
                                     headers={"Authorization": f"Bearer {self.api_token}"}) as response:
            response.body = await response.json()
            return response


async def open_bot(tmp_path, **overrides) -> Bot:
    values = dict(http_port=free_port(), http_host="127.0.0.1", pixverse_simulated_duration_seconds=1.0)
    values.update(overrides)
    core = await Core.open(settings(tmp_path, **values), QuietDiscord(), token_checker=FakeChecker())
    bot = Bot(core, aiohttp.ClientSession())
    bot.api_token = await core.api_tokens.create(GUILD, "700000000000000009")
    request = await core.accounts.prepare({"discord": TOKEN, "server": GUILD, "channel": CHANNEL, "maxJobs": 1},
                                          path_channel=CHANNEL, guild_id=GUILD)
    await core.accounts.save(request)
    return bot


@pytest.fixture
async def bot(tmp_path):
    opened = await open_bot(tmp_path, metrics_enabled=True)
    opened.core.metrics.cache_seconds = 0  # the gauges as the database has them at each scrape
    yield opened
    await opened.session.close()
    await opened.core.close()


async def until_ended(bot: Bot, job_id: str) -> None:
    async with asyncio.timeout(10):
        while (await bot.core.dispatcher.get(job_id, GUILD)).executing:
            await asyncio.sleep(0.02)
    await bot.core.dispatcher.wait_idle()


def value(samples, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_every_family_is_there_and_counters_move_by_one_per_job(bot):
    before = await bot.scrape()
    assert bot.families == FAMILIES
    assert value(before, "pixverse_accounts", state="in_rotation") == 1
    assert value(before, "pixverse_accounts", state="out_of_rotation") == 0
    assert value(before, "pixverse_jobs_executing") == 0 and value(before, "pixverse_jobs_waiting") == 0
    assert math.isnan(value(before, "pixverse_gateway_latency_seconds"))  # this view has no gateway

    created = await bot.create()
    assert created.status == 200
    during = await bot.scrape()
    assert value(during, "pixverse_jobs_executing") == 1
    # A second job while the only account is full: refused, 429.
    refused = await bot.create()
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    await until_ended(bot, created.body["jobid"])
    after = await bot.scrape()

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pixverse_jobs_total", verb="create", state="completed") == 1
    assert sum(after["pixverse_jobs_total"].values()) - sum(before["pixverse_jobs_total"].values()) == 1
    assert moved("pixverse_job_run_seconds_count", verb="create") == 1
    assert moved("pixverse_job_queue_wait_seconds_count", verb="create") == 1
    assert 0 < moved("pixverse_job_run_seconds_sum", verb="create") < 10
    assert moved("pixverse_placements_total", result="placed") == 1
    assert moved("pixverse_placements_total", result="queued") == 0
    assert moved("pixverse_placements_total", result="refused") == 1
    assert moved("pixverse_http_busy_total") == 1
    assert value(after, "pixverse_jobs_executing") == 0
    route = "/v1/pixverse/create"
    assert moved("pixverse_http_requests_total", route=route, method="POST", status="200") == 1
    assert moved("pixverse_http_requests_total", route=route, method="POST", status="429") == 1
    assert moved("pixverse_http_request_seconds_count", route=route) == 2
    # Scrapes are requests too, by their template.
    assert value(after, "pixverse_http_requests_total", route="/metrics", method="GET", status="200") >= 2
    # The store was timed at the port, by method name.
    assert value(after, "pixverse_db_operation_seconds_count", operation="jobs.place") == 2
    assert value(after, "pixverse_db_operation_seconds_count", operation="jobs.release") == 1
    # No job id and no user id in any label.
    labels = {str(v) for series in after.values() for key in series for _, v in key}
    assert not any(label.startswith("job:") or label in (GUILD, CHANNEL) for label in labels)


async def test_unknown_paths_share_one_route_label(bot):
    for path in ("/nothing/here", "/v1/pixverse/nope/1", "/v1/pixverse/nope/2"):
        assert (await bot.get(path)).status == 404
    samples = await bot.scrape()
    assert value(samples, "pixverse_http_requests_total", route="unmatched", method="GET", status="404") == 3
    assert not any("/nothing" in str(key) for series in samples.values() for key in series)


async def test_an_account_out_of_rotation_is_counted(bot):
    await bot.core.accounts.repository.set_rotation(GUILD, CHANNEL, in_rotation=False, error="Blocked")
    samples = await bot.scrape()
    assert value(samples, "pixverse_accounts", state="in_rotation") == 0
    assert value(samples, "pixverse_accounts", state="out_of_rotation") == 1


async def test_the_http_busy_event_names_route_server_and_retry_after(bot):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter_for("json"))
    logger = logging.getLogger("bot.events")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        first = await bot.create()
        refused = await bot.create()
        await until_ended(bot, first.body["jobid"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [busy] = [line for line in lines if line["event"] == "http.busy"]
    assert (busy["route"], busy["server"], busy["retry_after"]) == (
        "/v1/pixverse/create", GUILD, int(refused.headers["Retry-After"]))
    # The first job's start may come before or after the refusal: its own task sends it.
    assert sorted(line["event"] for line in lines) == ["http.busy", "job.completed", "job.created", "job.started"]
    assert bot.api_token not in stream.getvalue() and TOKEN not in stream.getvalue()


async def test_disabled_metrics_are_a_404_like_any_unknown_path(tmp_path):
    bot = await open_bot(tmp_path)
    try:
        assert bot.core.metrics is None
        for method in ("GET", "HEAD"):
            async with bot.session.request(method, bot.base + "/metrics") as response:
                assert response.status == 404
                if method == "GET":
                    assert await response.json() == {"error": "Not found: /metrics", "code": 404}
        # Events still count nothing and fail nothing without metrics.
        assert (await bot.create()).status == 200
    finally:
        await bot.session.close()
        await bot.core.close()


async def test_a_metrics_token_is_required_when_set(tmp_path):
    bot = await open_bot(tmp_path, metrics_enabled=True, metrics_token=METRICS_TOKEN)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": METRICS_TOKEN},
                        {"Authorization": f"Bearer {bot.api_token}"}):
            async with bot.session.get(bot.base + "/metrics", headers=headers) as response:
                assert response.status == 401
                assert await response.json() == {"error": "Unauthorized", "code": 401}
        samples = await bot.scrape(Authorization=f"Bearer {METRICS_TOKEN}")
        assert set(bot.families) == set(FAMILIES)
        assert value(samples, "pixverse_http_requests_total", route="/metrics", method="GET", status="401") == 4
    finally:
        await bot.session.close()
        await bot.core.close()


async def test_the_gateway_latency_is_read_at_each_scrape(tmp_path):
    latency = [math.nan]
    core = await Core.open(settings(tmp_path, metrics_enabled=True, http_port=free_port(), http_host="127.0.0.1"),
                           QuietDiscord(), gateway_latency=lambda: latency[0])
    session = aiohttp.ClientSession()
    try:
        bot = Bot(core, session)
        assert math.isnan(value(await bot.scrape(), "pixverse_gateway_latency_seconds"))
        latency[0] = 0.042
        assert value(await bot.scrape(), "pixverse_gateway_latency_seconds") == 0.042
    finally:
        await session.close()
        await core.close()


async def test_the_discord_views_own_latency_is_the_default(tmp_path):
    class Connected(QuietDiscord):
        latency = 0.125

    core = await Core.open(settings(tmp_path, metrics_enabled=True), Connected())
    try:
        text = (await core.metrics.render()).decode()
        assert "pixverse_gateway_latency_seconds 0.125" in text
    finally:
        await core.close()


async def test_a_scrape_storm_counts_the_database_once_per_cache_time():
    calls = 0

    async def store_counts():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 3, 2, 5, 1

    now = [100.0]
    metrics = Metrics(store_counts=store_counts, cache_seconds=5.0, clock=lambda: now[0])
    pages = await asyncio.gather(*(metrics.render() for _ in range(50)))
    assert calls == 1
    families = {f.name: f for f in text_string_to_metric_families(pages[-1].decode())}
    assert families["pixverse_jobs_executing"].samples[0].value == 3
    assert families["pixverse_jobs_waiting"].samples[0].value == 2
    assert {s.labels["state"]: s.value for s in families["pixverse_accounts"].samples} == {
        "in_rotation": 5, "out_of_rotation": 1}
    now[0] += 4.9
    await metrics.render()
    assert calls == 1
    now[0] += 0.2
    await metrics.render()
    assert calls == 2


async def test_a_failed_count_keeps_the_scrape_answering():
    async def broken():
        raise OSError("database gone")

    metrics = Metrics(store_counts=broken)
    families = {f.name: f for f in text_string_to_metric_families((await metrics.render()).decode())}
    assert math.isnan(families["pixverse_jobs_executing"].samples[0].value)


async def test_a_hanging_count_keeps_the_scrape_answering_with_the_last_counts(caplog):
    """A database that stops answering (not refusing) would hold a scrape for its pool's and
    statement's limits, past Prometheus's own timeout: the scrape answers after counts_timeout."""
    hang = asyncio.Event()
    now = [0.0]

    calls = []
    answers = asyncio.Event()

    async def counts():
        calls.append(1)
        if hang.is_set():
            try:
                await answers.wait()
            except asyncio.CancelledError:  # as asyncpg's cancel request to a server that hangs
                await asyncio.sleep(30)
                raise
        return (3, 1, 2, 0)

    metrics = Metrics(store_counts=counts, cache_seconds=5.0, counts_timeout=0.2, clock=lambda: now[0])
    await metrics.render()
    hang.set()
    now[0] += 10
    with caplog.at_level(logging.WARNING, logger="bot.metrics"):
        text = (await asyncio.wait_for(metrics.render(), 5)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["pixverse_jobs_executing"].samples[0].value == 3  # the last counts
    assert "Counting jobs and accounts for /metrics failed (TimeoutError)" in caplog.text
    now[0] += 10
    await asyncio.wait_for(metrics.render(), 5)
    assert len(calls) == 2  # the count still under way is waited for again, not started twice
    answers.set()  # the database answers again


def test_each_metrics_has_its_own_registry():
    one, two = Metrics(), Metrics()
    one.placement_refused()
    assert one.registry is not two.registry
    assert one.placements.labels("refused")._value.get() == 1
    assert two.placements.labels("refused")._value.get() == 0


def test_a_clients_made_up_methods_share_one_label():
    metrics = Metrics()
    for method in ("GET", "XMETH0", "XMETH1", "get", "BREW"):
        metrics.observe_request("/v1/pixverse/jobs/", method, 404, 0.01)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    methods = sorted({s.labels["method"] for s in families["pixverse_http_requests"].samples})
    assert methods == ["GET", "other"]
