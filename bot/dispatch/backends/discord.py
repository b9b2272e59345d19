"""PIXVERSE_BACKEND=discord: jobs run by PixVerse on Discord, as shared/pixverse-protocol.md says.

The account's user token acts (slash command, button press) through the user-API client;
the bot observes: every PixVerse message in an account's channel reaches :meth:`observe`
(from the bot's gateway, or from channel history after a restart), is read by the parser
and attributed to one of the account's jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot.dispatch.backends.base import JobUpdate, PixverseBackend, SubmitError
from bot.dispatch.catalogue import CATALOGUE
from bot.dispatch.models import Job, JobStatus, Verb
from bot.store import AccountStore, JobStore
from bot.pixverse.client import (
    DISCORD_EPOCH_MS,
    AccountRejected,
    CommandUnavailable,
    DiscordUserClient,
    PixverseClientError,
)
from bot.pixverse.parser import (
    GROUP_CREATE,
    EventKind,
    JobCandidate,
    PixverseEvent,
    match_job,
    message_belongs_to_account,
    message_users,
    parse_message,
)
from bot.text import UNSTORABLE

log = logging.getLogger(__name__)


# Reads a channel's messages after a snowflake with the bot's own token, oldest first.
HistoryReader = Callable[[str, int], AsyncIterator[dict[str, Any]]]

_STATUS = {
    EventKind.STARTED: JobStatus.STARTED,
    EventKind.PROGRESS: JobStatus.PROGRESS,
    EventKind.COMPLETED: JobStatus.COMPLETED,
    EventKind.FAILED: JobStatus.FAILED,
    EventKind.MODERATED: JobStatus.MODERATED,
}


def snowflake_at(timestamp: float) -> int:
    return max(0, int(timestamp * 1000) - DISCORD_EPOCH_MS) << 22


# Discord sends at most 10 embeds per message; more is not a message to keep whole.
EMBEDS_KEPT = 10
# Edited PixVerse messages whose job was seen not running (ended, moved): their next edits go
# straight to the general path; the oldest are forgotten beyond this many.
SETTLED_KEPT = 10_000
# PixVerse's news of a running job that is written in one statement when its message is known.
_PROGRESS_KINDS = frozenset({EventKind.STARTED, EventKind.PROGRESS})


def _message_extras(message: dict[str, Any]) -> dict[str, Any]:
    """What the useapi job model shows of PixVerse's message beside the parser's reading: its
    timestamp and its embeds, as Discord sent them (the embeds are kept as JSON text in ASCII; a
    timestamp carrying what no engine stores is no timestamp, as the parser reads ids)."""
    timestamp = message.get("timestamp")
    if not isinstance(timestamp, str) or len(timestamp) > 64 or UNSTORABLE.search(timestamp):
        timestamp = None
    embeds = message.get("embeds")
    return {
        "timestamp": timestamp,
        "embeds": tuple(e for e in embeds[:EMBEDS_KEPT] if isinstance(e, dict)) if isinstance(embeds, list) else (),
    }


def job_update(event: PixverseEvent, message: dict[str, Any] | None = None) -> JobUpdate:
    """The parser's event in the dispatcher's words."""
    if event.kind is EventKind.ACCOUNT_BLOCKED:
        return JobUpdate(account_rejected=f"PixVerse: {event.error}", error_details=event.error_details)
    if event.kind is EventKind.OVERLOADED:
        return JobUpdate(overloaded=True, error_details=event.error_details or event.error)
    return JobUpdate(
        _STATUS[event.kind],
        message_id=event.message_id,
        progress=event.progress,
        content=event.content,
        attachments=tuple(
            {"url": a.url, "filename": a.filename, "size": a.size, "content_type": a.content_type}
            for a in event.attachments
        ),
        buttons=tuple(
            {"label": b.label, "custom_id": b.custom_id, "message_flags": event.message_flags} for b in event.buttons
        ),
        error=event.error,
        error_details=event.error_details,
        **(_message_extras(message) if message is not None else {}),
    )


def candidate(job: Job) -> JobCandidate:
    return JobCandidate(
        job_id=job.job_id,
        prompt=job.prompt,
        is_followup=job.verb is Verb.BUTTON,
        group=CATALOGUE[job.verb].replies or GROUP_CREATE,
        parent_message_id=job.params.get("parent_message_id"),
        message_id=job.message_id,
        submitted_order=job.seq,
    )


class DiscordBackend(PixverseBackend):
    def __init__(
        self,
        client: DiscordUserClient,
        accounts: AccountStore,
        jobs: JobStore,
        read_history: HistoryReader,
        *,
        application_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.accounts = accounts
        self.jobs = jobs
        self.read_history = read_history
        self.clock = clock
        # PixVerse's bot user id is its application id: configured, or learned per server.
        self._configured_app_id = application_id
        self._app_ids: dict[str, str] = {}
        # The account channels, in memory, for follows() (the gateway's filter): read from the store
        # (refresh_channels), told of saves and deletions, and every channel this process sends a
        # job on. A channel too many costs a lookup; one missing would lose PixVerse's messages.
        self.channels: set[str] = set()
        self._refreshing: list[tuple[bool, str]] | None = None  # changes told during a refresh
        # Message ids whose job the general path found not running (ended or moved): no one-statement try.
        self._settled: dict[str, None] = {}

    async def _learn_app_id(self, token: str, guild_id: str) -> None:
        if guild_id not in self._app_ids:
            self._app_ids[guild_id] = self._configured_app_id or await self.client.pixverse_application_id(
                token, guild_id
            )

    # --- which messages are followed (in memory: the gateway's filter asks for every message) -----

    def follows(self, message: dict[str, Any]) -> bool:
        """Whether :meth:`observe` may act on this message: PixVerse's (as observe knows PixVerse's
        user in that server) in an account channel. No await, no store: a dict and a set."""
        return message.get("channel_id") in self.channels and self._pixverse_author(message) is not None

    def _pixverse_author(self, message: dict[str, Any]) -> str | None:
        """PixVerse's user id when it wrote the message (PixVerse's user as known in that server), else None."""
        author = message.get("author")
        pixverse_id = self._app_ids.get(str(message.get("guild_id"))) or self._configured_app_id
        if pixverse_id is None or not isinstance(author, dict) or str(author.get("id")) != pixverse_id:
            return None
        return pixverse_id

    async def refresh_channels(self) -> None:
        """Reads the account channels from the store (saves and deletions of other processes
        sharing it, and anything missed); what is told meanwhile still applies after it."""
        self._refreshing = told = []
        try:
            channels = await self.accounts.channel_ids()
        finally:
            self._refreshing = None
        for saved, channel_id in told:
            (channels.add if saved else channels.discard)(channel_id)
        self.channels = channels

    def channel_saved(self, channel_id: str) -> None:
        self.channels.add(channel_id)
        if self._refreshing is not None:
            self._refreshing.append((True, channel_id))

    def channel_deleted(self, channel_id: str) -> None:
        self.channels.discard(channel_id)
        if self._refreshing is not None:
            self._refreshing.append((False, channel_id))

    # --- acting ------------------------------------------------------------------------------

    async def submit(self, job: Job, token: str) -> None:
        self.channel_saved(job.account_channel_id)  # PixVerse answers there: followed from now on
        command = CATALOGUE[job.verb]
        images = await self.jobs.images(job.job_id) if command.images else None
        missing = [p.name for p in command.images if p.required and p.name not in (images or {})]
        if missing:
            # Ended meanwhile (its images go with it), or stored by a version that kept none.
            raise SubmitError(f"The image of this job is no longer kept ({', '.join(missing)})", account_fault=False)
        options = command.pixverse_options(job.params, images)
        await self._act(
            job,
            token,
            self.client.run_command(
                token, guild_id=job.guild_id, channel_id=job.account_channel_id, name=job.verb.value, options=options
            ),
        )

    async def press(self, job: Job, parent: Job, token: str) -> None:
        self.channel_saved(job.account_channel_id)
        label = job.params["button"]
        button = next((b for b in parent.buttons if b.get("label") == label), None)
        if button is None or parent.message_id is None:
            raise SubmitError(f"Job {parent.job_id} has no {label} button to press")
        await self._act(
            job,
            token,
            self.client.press_button(
                token,
                guild_id=job.guild_id,
                channel_id=job.account_channel_id,
                message_id=parent.message_id,
                message_flags=int(button.get("message_flags") or 0),
                custom_id=button["custom_id"],
                application_id=self._app_ids.get(job.guild_id) or self._configured_app_id,
            ),
        )

    async def _act(self, job: Job, token: str, request) -> None:
        try:
            await self._learn_app_id(token, job.guild_id)
            await request
        except AccountRejected as exc:
            raise SubmitError(
                f"Discord refused the account's token ({exc.status})", account_rejected=True, details=str(exc)
            ) from None
        except CommandUnavailable as exc:
            # PixVerse is missing from the server (or changed): no account is to blame.
            raise SubmitError(
                "PixVerse's command was not found in this server: is the PixVerse bot in it?",
                account_fault=False, details=str(exc),
            ) from None
        except PixverseClientError as exc:
            raise SubmitError("PixVerse could not be reached on Discord", details=str(exc)) from None
        finally:
            request.close()  # a coroutine never awaited (the app-id lookup failed) is closed quietly

    async def resume(self, jobs: list[Job], token: str) -> None:
        """Reads the account channel's messages since its oldest job was submitted, once;
        new ones keep arriving through the gateway as usual."""
        first = min(jobs, key=lambda job: job.submitted_at or job.created_at)
        self.channel_saved(first.account_channel_id)
        await self._learn_app_id(token, first.guild_id)
        # A job's times are the database's (bot/dispatch/clock.py); Discord's are nearest this
        # machine's, which the bot keeps beside Discord's elsewhere too (interactions' ages).
        offset = getattr(getattr(self.events, "clock", None), "offset", 0.0)
        after = snowflake_at((first.submitted_at or first.created_at) - offset - 5)
        async for message in self.read_history(first.account_channel_id, after):
            # Messages read over REST carry no guild_id (only gateway events do).
            await self.observe({**message, "guild_id": first.guild_id, "channel_id": first.account_channel_id})

    async def observe(self, message: dict[str, Any]) -> None:
        """A message (new or edited) in some channel; acts only on PixVerse's in account channels."""
        guild_id, channel_id = message.get("guild_id"), message.get("channel_id")
        pixverse_id = self._pixverse_author(message)
        if guild_id is None or channel_id is None or pixverse_id is None:
            return
        message_id = str(message.get("id"))
        event = None
        if message.get("edited_timestamp") and message_id not in self._settled:
            # An edit: most often PixVerse's progress of a job running on this account.
            event = parse_message(message)
            if event is not None and await self._progressed(event, message, str(guild_id), str(channel_id)):
                return
        job = await self._observed(message, event, pixverse_id)
        if job is None or not job.slot_held:
            self._settle(message_id)  # its next edits go straight to the general path
        else:
            self._settled.pop(message_id, None)

    async def _observed(self, message: dict[str, Any], event: PixverseEvent | None, pixverse_id: str) -> Job | None:
        """The general path: reads the account, the message's job (or attributes it), then tells the
        dispatcher. Returns the job it told (as read before), or None."""
        guild_id, channel_id = str(message.get("guild_id")), str(message.get("channel_id"))
        account = await self.accounts.get(guild_id, channel_id)
        if account is None or not message_belongs_to_account(
            message, pixverse_user_id=pixverse_id, account_user_id=account.discord_user_id
        ):
            return None
        event = event or parse_message(message)
        if event is None:
            return None
        job_id = await self.jobs.job_of_message(event.message_id)
        if job_id is not None:
            job = await self.jobs.get(job_id)
            if job is None or job.account_channel_id != account.channel_id:
                return None  # the job moved to another account since: this account's news is not its
        else:
            job = await self._attribute(event, account.channel_id)
            if job is None:
                log.debug("PixVerse message %s in %s matches no job", event.message_id, channel_id)
                return None
            job_id = job.job_id
        await self.events.job_update(job_id, job_update(event, message))
        return job

    async def _progressed(self, event: PixverseEvent, message: dict[str, Any], guild_id: str, channel_id: str) -> bool:
        """The common case, PixVerse's progress edit of a running job's message, in one statement:
        the store checks what the general path reads first (the message's job, still on this
        account and past ``created``; the account's user among those the message is for). False:
        nothing was written, and the general path decides, as it always did."""
        recorded = getattr(self.events, "progress_recorded", None)
        if event.kind not in _PROGRESS_KINDS or recorded is None:
            return False
        if getattr(self.events, "closing", False):
            return True  # as job_update: nothing acted on while closing, the restart replays it
        job = await self.jobs.record_message_progress(
            event.message_id, _STATUS[event.kind], account_channel_id=channel_id, guild_id=guild_id,
            for_users=message_users(message), now=getattr(self.events, "clock", self.clock)(),
            progress=event.progress, content=event.content,
        )
        if job is None:
            return False
        recorded(job)
        return True

    def _settle(self, message_id: str) -> None:
        if message_id not in self._settled and len(self._settled) >= SETTLED_KEPT:
            self._settled.pop(next(iter(self._settled)))
        self._settled[message_id] = None

    async def _attribute(self, event: PixverseEvent, account_channel_id: str) -> Job | None:
        """The job a PixVerse message not seen before belongs to (as read now), remembered from
        now on: an edit or a replay of it then goes to the same job, whatever has ended since."""
        jobs = {job.job_id: job for job in await self.jobs.open_at_pixverse(account_channel_id)}
        candidates = [candidate(job) for job in jobs.values()]
        if event.reference_message_id and await self.jobs.job_of_message(event.reference_message_id):
            # A reply to a known result: only a button job can own it, never a prompt match.
            candidates = [c for c in candidates if c.is_followup]
        job_id = match_job(event, candidates)
        if job_id is None:
            return None
        await self.jobs.remember_message(event.message_id, job_id)
        return jobs[job_id]

    async def close(self) -> None:
        await self.client.close()
