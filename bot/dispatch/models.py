"""Jobs as the dispatcher and the useapi job model see them."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    CREATED = "created"
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    MODERATED = "moderated"
    CANCELLED = "cancelled"

    @property
    def executing(self) -> bool:
        return self in EXECUTING


EXECUTING = frozenset({JobStatus.CREATED, JobStatus.STARTED, JobStatus.PROGRESS})
FINAL = frozenset(JobStatus) - EXECUTING

class JobState(StrEnum):
    """Where a job is, beside its public status: the one thing the store keeps about it."""

    WAITING = "waiting"  # for a slot, in its server's queue
    PLACED = "placed"  # holds a slot of its account, not yet sent to PixVerse
    SUBMITTED = "submitted"  # sent to PixVerse
    DONE = "done"  # ended; the status says how


# The error of a job that ran out of time (its useapi code is 408).
TIMED_OUT = "Timed out"

# requester and request channel of jobs asked through the HTTP API (no Discord member).
API_REQUESTER = "api"


class Verb(StrEnum):
    CREATE = "create"
    CREATE_SINGLE = "create_single"
    ANIMATE = "animate"
    MEME_FACE = "meme_face"
    BUTTON = "button"


def new_job_id() -> str:
    # Opaque, copyable from a Discord message: letters, digits, '-', '_' and ':'.
    return "job:" + secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Job:
    job_id: str
    guild_id: str
    account_channel_id: str | None
    account_user_id: str | None
    max_jobs: int | None
    requester_id: str
    request_channel_id: str
    verb: Verb
    params: dict[str, Any]
    parent_job_id: str | None
    status: JobStatus
    state: JobState
    owner: str | None
    placement_attempts: int
    version: int  # +1 each time the job is put on an account: a decision on an older read does not apply
    seq: int
    created_at: float
    updated_at: float
    submitted_at: float | None = None
    message_id: str | None = None
    progress: int | None = None
    content: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    buttons: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_details: str | None = None
    message_timestamp: str | None = None  # when PixVerse posted its last message (Discord's ISO text)
    embeds: list[dict[str, Any]] = field(default_factory=list)  # that message's embeds
    # The one message the bot edits as the job moves, for a job a Discord member asked for (None
    # until it has one; always for HTTP API jobs). in_channel False: the reply to the member's
    # interaction, edited through its webhook while Discord allows; True: a message the bot posted
    # in request_channel_id, edited through the channel (JobStore.set_status_message).
    status_message_id: str | None = None
    status_message_in_channel: bool = False
    # Public answers already made from this (immutable) job, by to_public's arguments.
    _answers: dict[tuple[str | None, bool], dict[str, Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def prompt(self) -> str | None:
        return self.params.get("prompt")

    @property
    def slot_held(self) -> bool:
        return self.state in (JobState.PLACED, JobState.SUBMITTED)

    @property
    def queued(self) -> bool:
        return self.state is JobState.WAITING

    @property
    def executing(self) -> bool:
        return self.status.executing

    @property
    def state_word(self) -> str:
        """How members read where it is: ``waiting`` in the queue, else its status."""
        return "waiting" if self.queued else self.status.value

    @property
    def code(self) -> int:
        """useapi's ``code`` of a job: 200 unless it failed; 422 moderated, 408 timed out, 500 failed."""
        if self.status is JobStatus.MODERATED:
            return 422
        if self.status is JobStatus.FAILED:
            return 408 if self.error == TIMED_OUT else 500
        return 200

    def to_public(self, *, masked_token: str | None = None, with_reply: bool = False) -> dict[str, Any]:
        """The useapi job fields; the account token only ever masked.

        Made once per job and arguments, and handed out as a copy the caller may change: a
        client polling an unchanged job gets the same Job back from the store (every adapter
        keeps the one decoded from an unchanged row: bot/store/decoded.py), so its answer is not
        made again."""
        key = (masked_token, with_reply)
        made = self._answers.get(key)
        if made is None:
            made = self._answers[key] = self._public(masked_token, with_reply)
        return dict(made)

    def _public(self, masked_token: str | None, with_reply: bool) -> dict[str, Any]:
        public: dict[str, Any] = {
            "jobid": self.job_id,
            "verb": f"pixverse-{self.verb.value}",  # useapi's spelling
            "status": self.status.value,
            "created": _iso(self.created_at),
            "updated": _iso(self.updated_at),
            "prompt": self.prompt,
            "buttons": [b["label"] for b in self.buttons],
            "server": self.guild_id,
            "channel": self.account_channel_id,
            "maxJobs": self.max_jobs,
            "messageId": self.message_id,
            "content": self.content,
            "timestamp": self.message_timestamp,
            "attachments": self.attachments,
            "embeds": self.embeds,
            "error": self.error,
            "errorDetails": self.error_details,
            "code": self.code,
        }
        if masked_token is not None:
            public["discord"] = masked_token
        if self.verb is Verb.BUTTON:
            public["button"] = self.params.get("button")
            public["parentJobId"] = self.parent_job_id
        # Only for the API caller who set them: such URLs often carry their own secrets.
        for key in ("replyUrl", "replyRef") if with_reply else ():
            if self.params.get(key) is not None:
                public[key] = self.params[key]
        return {k: v for k, v in public.items() if v is not None}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_JOB_FIELDS = tuple(f.name for f in fields(Job) if f.init)  # computed once: fields() is slow per row


def job_from_row(row: Any) -> Job:
    """A jobs row as a Job: the columns are named as the fields; a few need converting."""
    values = {name: row[name] for name in _JOB_FIELDS}
    values.update(
        verb=Verb(values["verb"]),
        status=JobStatus(values["status"]),
        params=json.loads(values["params"]),
        state=JobState(values["state"]),
        attachments=json.loads(values["attachments"]) if values["attachments"] else [],
        buttons=json.loads(values["buttons"]) if values["buttons"] else [],
        embeds=json.loads(values["embeds"]) if values["embeds"] else [],
        status_message_in_channel=bool(values["status_message_in_channel"]),  # SQLite keeps 0/1
    )
    return Job(**values)
