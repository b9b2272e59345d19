"""What the bot does, told once: one hub for every event an operator cares about. No Discord here.

``Events.emit(name, **fields)`` is the only way an event leaves the code that saw it happen:

- one INFO line on the logger ``bot.events`` with stable keys. As text:
  ``job.completed job=job:abc server=123 verb=create account=456 wait_s=1.2 run_s=34.0``; the
  fields also ride on the record (``event`` and ``event_fields``, and each field as its own attribute
  when the name is free on a LogRecord), so the JSON format writes them as keys (bot/json_logs.py);
- the Prometheus metrics that follow from it (bot/metrics.py), when metrics are on;
- every subscriber, ``callback(name, fields)``: a plain function is called at once, a coroutine
  function runs as a task the hub keeps until it ends, and ``close()`` waits for briefly.
  A failing subscriber is logged, never raised into the code that emitted.

Fields are ids (as strings), names, numbers, booleans and reason texts: never a token. Every text
goes through the log redactor as well, so a secret that slipped into a reason is masked in the
line, in the JSON keys and in what subscribers get.

The events and their keys (kept stable: dashboards and alerts read them):

===========================  ===========================================================================
``account.saved``            server, channel, max_jobs, created (new configuration), back_in_rotation
                             (saving put an out-of-rotation account back)
``account.deleted``          server, channel
``account.out_of_rotation``  server, channel, reason (once per leaving)
``account.reset``            server, channel, back_in_rotation (it was out of rotation)
``api_token.created``        server, token_id (first 12 hex digits of the token's SHA-256), by
``api_token.revoked``        server, count
``job.created``              job, server, verb, account (null while it waits), queued
``job.queued``               job, server, verb, position
``job.started``              job, server, verb, account, wait_s, attempt (sent to PixVerse; a job moved
                             to another account or retried is sent again, attempt 2 …)
``job.completed`` …          job, server, verb, account, wait_s, run_s; ``job.failed``,
                             ``job.moderated``, ``job.cancelled`` and ``job.timed_out`` add reason
``http.busy``                route, server, retry_after (a 429 of the HTTP API)
===========================  ===========================================================================

``wait_s`` is the time from the job's creation to its (last) submission to PixVerse, or to its end
when it never got there; ``run_s`` from that submission to its end (null when never sent).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.logs import redactor

if TYPE_CHECKING:
    from bot.dispatch.models import Job
    from bot.metrics import Metrics

log = logging.getLogger("bot.events")

Subscriber = Callable[[str, dict[str, Any]], Awaitable[None] | None]

ACCOUNT_SAVED = "account.saved"
ACCOUNT_DELETED = "account.deleted"
ACCOUNT_OUT_OF_ROTATION = "account.out_of_rotation"
ACCOUNT_RESET = "account.reset"
API_TOKEN_CREATED = "api_token.created"
API_TOKEN_REVOKED = "api_token.revoked"
JOB_CREATED = "job.created"
JOB_QUEUED = "job.queued"
JOB_STARTED = "job.started"
JOB_COMPLETED = "job.completed"
JOB_FAILED = "job.failed"
JOB_MODERATED = "job.moderated"
JOB_CANCELLED = "job.cancelled"
JOB_TIMED_OUT = "job.timed_out"
HTTP_BUSY = "http.busy"

# A job's final event -> its final state (the label of pixverse_jobs_total).
JOB_ENDINGS = {
    JOB_COMPLETED: "completed",
    JOB_FAILED: "failed",
    JOB_MODERATED: "moderated",
    JOB_CANCELLED: "cancelled",
    JOB_TIMED_OUT: "timed_out",
}
NAMES = frozenset({
    ACCOUNT_SAVED, ACCOUNT_DELETED, ACCOUNT_OUT_OF_ROTATION, ACCOUNT_RESET, API_TOKEN_CREATED, API_TOKEN_REVOKED,
    JOB_CREATED, JOB_QUEUED, JOB_STARTED, HTTP_BUSY, *JOB_ENDINGS,
})

# How long close() lets subscribers' tasks finish before cancelling them.
CLOSE_GRACE_SECONDS = 2.0

# A LogRecord's own attributes (and the two logging refuses in extra): a field of that name rides
# only in ``event_fields`` (``created`` of account.saved is one).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_BARE = re.compile(r'[^\s"=\\]+')


def _value(value: Any) -> Any:
    """A field as it is logged and handed out: ids and texts as (redacted) strings, numbers rounded."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return round(value, 3)
    return redactor.redact(str(value))


def _text(value: Any) -> str:
    """A value in the text line: bare when it can be, else quoted as JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)


def render(name: str, fields: dict[str, Any]) -> str:
    """The text line of an event: its name, then ``key=value`` in the order given."""
    return " ".join([name, *(f"{key}={_text(value)}" for key, value in fields.items())])


def job_fields(job: Job, *, ended_at: float | None = None) -> dict[str, Any]:
    """The keys every job event starts with; with ``ended_at``, its queue wait and run time."""
    fields: dict[str, Any] = {"job": job.job_id, "server": job.guild_id, "verb": job.verb.value,
                              "account": job.account_channel_id}
    if ended_at is not None:
        sent = job.submitted_at
        fields["wait_s"] = max(0.0, (sent if sent is not None else ended_at) - job.created_at)
        fields["run_s"] = None if sent is None else max(0.0, ended_at - sent)
    return fields


class Events:
    """The event hub of one Core (tests and tools may make their own: it needs nothing)."""

    def __init__(self, *, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._subscribers: list[Subscriber] = []
        self._tasks: set[asyncio.Task] = set()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Calls ``callback(name, fields)`` for every event from now on; returns the unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, name: str, **fields: Any) -> None:
        """Logs the event as one INFO line, counts it in the metrics, tells the subscribers."""
        values = {key: _value(value) for key, value in fields.items()}
        extra: dict[str, Any] = {key: value for key, value in values.items() if key not in _RECORD_ATTRIBUTES}
        extra.update(event=name, event_fields=values)
        log.info("%s", render(name, values), extra=extra)
        if self.metrics is not None:
            try:
                self.metrics.observe_event(name, values)
            except Exception:
                log.exception("Counting event %s in the metrics failed", name)
        for callback in list(self._subscribers):
            self._call(callback, name, dict(values))

    def placement_refused(self) -> None:
        """A placement refused for capacity (a 429): counted, with no line of its own (the HTTP
        API's ``http.busy`` is the line; a slash command's refusal is the member's reply)."""
        if self.metrics is not None:
            self.metrics.placement_refused()

    def _call(self, callback: Subscriber, name: str, fields: dict[str, Any]) -> None:
        try:
            outcome = callback(name, fields)
        except Exception:
            log.exception("Event subscriber %s failed on %s", _name_of(callback), name)
            return
        if not inspect.isawaitable(outcome):
            return
        try:
            task = asyncio.ensure_future(outcome)
        except RuntimeError:  # no running loop: nobody could run it
            if inspect.iscoroutine(outcome):
                outcome.close()
            log.warning("Event subscriber %s could not run for %s: no event loop", _name_of(callback), name)
            return
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, callback, name))

    def _finished(self, task: asyncio.Task, callback: Subscriber, name: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("Event subscriber %s failed on %s", _name_of(callback), name, exc_info=exc)

    async def close(self, *, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Lets the subscribers' tasks finish for ``grace`` seconds, then cancels what is left."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                log.warning("%d event subscriber task(s) still running after %g s were cancelled", len(late), grace)


def _name_of(callback: Any) -> str:
    return getattr(callback, "__qualname__", None) or type(callback).__name__
