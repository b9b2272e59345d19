"""Prometheus metrics of one Core, served at ``GET /metrics`` when METRICS_ENABLED=true.

Each Core has its own :class:`prometheus_client.CollectorRegistry` (never the global one: tests
build several Cores in one process). Labels are of bounded cardinality: verbs, final states,
route templates, methods, statuses and store method names; never a job id or a user id.

- Events move the counters and histograms (:meth:`Metrics.observe_event`, called by the hub).
- The HTTP middleware counts requests and times them (:meth:`Metrics.observe_request`).
- The stores, wrapped by :func:`timed_stores`, time each operation.
- The gauges of the database (jobs executing and waiting, accounts by state) are counted at
  scrape time (:meth:`Metrics.refresh`) with two COUNT queries, remembered for
  ``STORE_GAUGES_CACHE_SECONDS`` so that a storm of scrapes is not a storm of queries; they are the
  database's, the same whichever process is asked.
- The gateway latency is read at scrape time through the callable the Core was given (discord.py's
  ``bot.latency``): NaN before the bot connects.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.dispatch.models import Verb
from bot.events import HTTP_BUSY, JOB_CREATED, JOB_ENDINGS

log = logging.getLogger(__name__)

# ``pixverse_jobs_created`` beside ``pixverse_jobs_total`` would read as "jobs created": the
# counters' creation-time series are left out (a process-wide switch of prometheus_client).
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
STORE_GAUGES_CACHE_SECONDS = 5.0
# How long a scrape waits for the database's counts: a database that hangs (rather than refuses)
# would hold it for the pool's and the statement's limits (40 s on PostgreSQL), past Prometheus's
# 10 s scrape_timeout, and lose the whole scrape: the counters with the gauges.
STORE_COUNTS_TIMEOUT_SECONDS = 5.0
VERBS = tuple(verb.value for verb in Verb)
FINAL_STATES = tuple(JOB_ENDINGS.values())
PLACEMENT_RESULTS = ("placed", "queued", "refused")

RUN_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, math.inf)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, math.inf)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.inf)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, math.inf)

# (jobs executing, jobs waiting, accounts in rotation, accounts out of rotation)
StoreCounts = tuple[int, int, int, int]


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

def _retrieved(task: asyncio.Future) -> None:
    """A count that ends after its scrape gave up: its failure is not "never retrieved"."""
    if not task.cancelled():
        task.exception()


class Metrics:
    """The metric families of one Core, in a registry of their own."""

    content_type = CONTENT_TYPE  # of what render() returns

    def __init__(self, *, store_counts: Callable[[], Awaitable[StoreCounts]] | None = None,
                 gateway_latency: Callable[[], float | None] | None = None,
                 cache_seconds: float = STORE_GAUGES_CACHE_SECONDS,
                 counts_timeout: float = STORE_COUNTS_TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._store_counts = store_counts
        self._gateway_latency = gateway_latency
        self.cache_seconds = cache_seconds
        self.counts_timeout = counts_timeout
        self._clock = clock
        self._counts: StoreCounts | None = None
        self._counted_at = -math.inf
        self._refreshing = asyncio.Lock()
        self._counting: asyncio.Future[StoreCounts] | None = None
        registry = self.registry

        self.jobs = Counter("pixverse_jobs", "Jobs ended, by verb and final state", ("verb", "state"),
                            registry=registry)
        self.job_run = Histogram("pixverse_job_run_seconds", "Seconds from a job's submission to PixVerse to its end",
                                 ("verb",), buckets=RUN_BUCKETS, registry=registry)
        self.job_wait = Histogram("pixverse_job_queue_wait_seconds",
                                  "Seconds from a job's creation to its submission to PixVerse (or to its end)",
                                  ("verb",), buckets=WAIT_BUCKETS, registry=registry)
        self.placements = Counter("pixverse_placements", "Job placements: placed on an account, queued, or refused"
                                  " (429)", ("result",), registry=registry)
        self.http_busy = Counter("pixverse_http_busy", "HTTP API answers 429 (busy)", registry=registry)
        self.http_requests = Counter("pixverse_http_requests", "HTTP API requests by route template, method and"
                                     " status", ("route", "method", "status"), registry=registry)
        self.http_seconds = Histogram("pixverse_http_request_seconds", "HTTP API request latency by route template",
                                      ("route",), buckets=HTTP_BUCKETS, registry=registry)
        self.db_seconds = Histogram("pixverse_db_operation_seconds", "Database operation latency by store method",
                                    ("operation",), buckets=DB_BUCKETS, registry=registry)
        self.gateway = Gauge("pixverse_gateway_latency_seconds", "Discord gateway heartbeat latency (NaN before"
                             " the bot connects)", registry=registry)
        self.gateway.set_function(self._read_gateway_latency)
        registry.register(_StoreGauges(self))
        # Every series the bot can have starts at zero: a dashboard sees them before the first job.
        for verb in VERBS:
            self.job_run.labels(verb)
            self.job_wait.labels(verb)
            for state in FINAL_STATES:
                self.jobs.labels(verb, state)
        for result in PLACEMENT_RESULTS:
            self.placements.labels(result)

    # --- what moves them ----------------------------------------------------------------

    def observe_event(self, name: str, fields: dict[str, Any]) -> None:
        """The metrics that follow from an event (called by the event hub)."""
        state = JOB_ENDINGS.get(name)
        if state is not None:
            verb = _verb(fields.get("verb"))
            self.jobs.labels(verb, state).inc()
            if fields.get("run_s") is not None:
                self.job_run.labels(verb).observe(fields["run_s"])
            if fields.get("wait_s") is not None:
                self.job_wait.labels(verb).observe(fields["wait_s"])
        elif name == JOB_CREATED:
            self.placements.labels("queued" if fields.get("queued") else "placed").inc()
        elif name == HTTP_BUSY:
            self.http_busy.inc()

    def placement_refused(self) -> None:
        self.placements.labels("refused").inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # The method is the client's text: any one outside HTTP's own is counted as "other".
        method = method if method in HTTP_METHODS else "other"
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)

    # --- scraping ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Counts the database's jobs and accounts, unless counted within the cache time."""
        if self._store_counts is None or self._clock() - self._counted_at < self.cache_seconds:
            return
        async with self._refreshing:  # concurrent scrapes share one count
            if self._clock() - self._counted_at < self.cache_seconds:
                return
            # One count at a time: a count still under way (the database hangs) is waited for
            # again, not started twice. It is never cancelled here: cancelling a PostgreSQL query
            # waits for asyncpg's cancel request, which hangs as the server does.
            if self._counting is None or self._counting.done():
                self._counting = asyncio.ensure_future(self._store_counts())
                self._counting.add_done_callback(_retrieved)
            done, _ = await asyncio.wait({self._counting}, timeout=self.counts_timeout)
            try:
                if not done:
                    raise TimeoutError
                self._counts = self._counting.result()
            except Exception as exc:
                # The scrape still answers (the last counts, or none), failed or timed out: the
                # database's trouble shows in /healthz and the logs, not as a failed scrape.
                log.warning("Counting jobs and accounts for /metrics failed (%s)", type(exc).__name__)
            self._counted_at = self._clock()

    async def render(self) -> bytes:
        """The Prometheus text exposition of every family, the store's counts refreshed."""
        await self.refresh()
        return generate_latest(self.registry)

    def _read_gateway_latency(self) -> float:
        if self._gateway_latency is None:
            return math.nan
        try:
            value = self._gateway_latency()
        except Exception:
            return math.nan
        if value is None or not isinstance(value, (int, float)) or math.isinf(value):
            return math.nan
        return float(value)


class _StoreGauges:
    """The database's gauges, from the counts of the last refresh (NaN before one succeeded)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = self._metrics._counts
        executing, waiting, in_rotation, out_of_rotation = counts if counts is not None else (math.nan,) * 4
        yield GaugeMetricFamily("pixverse_jobs_executing", "Jobs holding an account's slot (placed or at PixVerse)",
                                value=executing)
        yield GaugeMetricFamily("pixverse_jobs_waiting", "Jobs waiting in their server's queue", value=waiting)
        accounts = GaugeMetricFamily("pixverse_accounts", "PixVerse accounts by state", labels=("state",))
        accounts.add_metric(("in_rotation",), in_rotation)
        accounts.add_metric(("out_of_rotation",), out_of_rotation)
        yield accounts


def _verb(value: Any) -> str:
    return value if value in VERBS else "other"


# --- the stores, timed --------------------------------------------------------------------


class _TimedStore:
    """A store whose coroutine methods are timed into pixverse_db_operation_seconds{operation}.

    The operation is ``<store>.<method>`` (``jobs.place``): the port's method names, a bounded set.
    Anything else (plain methods such as ``tokens.forget``, attributes) is the store's own."""

    def __init__(self, inner: Any, kind: str, histogram: Histogram) -> None:
        self._inner = inner
        self._kind = kind
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        observe = self._histogram.labels(f"{self._kind}.{name}").observe

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attribute(*args, **kwargs)
            finally:
                observe(time.perf_counter() - started)

        timed.__name__ = name
        setattr(self, name, timed)  # found directly from now on, without __getattr__
        return timed


def timed_stores(stores: Any, metrics: Metrics) -> Any:
    """The ``Stores`` bundle with each store timed (its type is kept: a dataclass ``replace``)."""
    return replace(stores, **{name: _TimedStore(getattr(stores, name), name, metrics.db_seconds)
                              for name in ("accounts", "jobs", "tokens", "servers")})
