"""The interface between the dispatcher and PixVerse."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from bot.dispatch.models import Job, JobStatus
from bot.text import storable_text


@dataclass(frozen=True)
class JobUpdate:
    """What PixVerse said about a job, in the dispatcher's words."""

    status: JobStatus | None = None
    message_id: str | None = None
    progress: int | None = None
    content: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    buttons: tuple[dict[str, Any], ...] = ()  # {"label": "U1", "custom_id": "...", "message_flags": 0}
    error: str | None = None
    error_details: str | None = None
    timestamp: str | None = None  # the message's timestamp, as Discord wrote it
    embeds: tuple[dict[str, Any], ...] = ()  # the message's embeds, as Discord sent them
    account_rejected: str | None = None  # the account must leave rotation with this reason
    overloaded: bool = False  # PixVerse refused for load: try again later, elsewhere if possible


class SubmitError(Exception):
    """A job could not be handed to PixVerse. ``str()`` is the reason a member may read.

    ``account_rejected``: the account must leave rotation. ``account_fault``: the failure
    counts towards the account's failures in a row (not when PixVerse is simply absent
    from the server, which no account can help).
    """

    def __init__(
        self, reason: str, *, account_rejected: bool = False, account_fault: bool = True, details: str | None = None
    ) -> None:
        # Both are kept with the job and the account, and may carry Discord's words: text every
        # engine stores (bot.text).
        reason = storable_text(reason)
        super().__init__(reason)
        self.reason = reason
        self.account_rejected = account_rejected
        self.account_fault = account_fault
        self.details = None if details is None else storable_text(details)


class JobEvents(Protocol):
    async def job_update(self, job_id: str, update: JobUpdate) -> None: ...


class PixverseBackend(ABC):
    """Runs jobs at PixVerse and reports what happens to them through :class:`JobEvents`."""

    events: JobEvents

    def bind(self, events: JobEvents) -> None:
        self.events = events

    @abstractmethod
    async def submit(self, job: Job, token: str) -> None:
        """Hands a create job to PixVerse with the account's token; raises SubmitError."""

    @abstractmethod
    async def press(self, job: Job, parent: Job, token: str) -> None:
        """Presses ``job.params['button']`` on ``parent``'s result; raises SubmitError."""

    @abstractmethod
    async def resume(self, jobs: list[Job], token: str) -> None:
        """Takes up tracking of one account's jobs submitted by a process that died."""

    async def close(self) -> None:
        """Releases what the backend holds."""

