"""Members' PixVerse jobs: create, press a result button, list, show, cancel.

The cog turns interactions into Dispatcher calls and the dispatcher's job changes into one
status message per job, edited in place (cogs/jobs/status.py decides when, presenting.py what):
the reply to the member's interaction while Discord lets the bot edit it (15 minutes), then (or
after a restart) one message in the channel where the job was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

import discord
from discord import app_commands
from discord.ext import commands

from bot.slash import core_validated_command, fit_lines, require_guild
from bot.dispatch.models import API_REQUESTER, FINAL, Job, Verb
from bot.accounts.validation import echo
from bot.dispatch.catalogue import CATALOGUE
from bot.dispatch.images import IMAGE_LIMIT, Image, too_large
from bot.errors import ApiError, StoreError
from bot.logs import register_secrets
from bot.events import ACCOUNT_DELETED, ACCOUNT_SAVED
from bot.gateway_filter import MessageGate
from bot.tree import in_time, reply, respond
from cogs.jobs.presenting import (
    EMBED_DESCRIPTION, EMBED_FIELDS, EMBED_TOTAL, JOBS_COG, Position, PressButton, end_notice, job_embed,
    progress_bar, shown_progress, state_line, status_message,
)
from cogs.jobs.status import TRACKED_JOBS, StatusBoard

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

log = logging.getLogger(__name__)

# Waiting this long for the command's own reply before a job's first edit.
REPLY_WAIT_SECONDS = 10.0
# A moment for the freed slots to be taken before the queue positions are read again.
QUEUE_SETTLE_SECONDS = 0.2
MINE_LIMIT = 10
# PixVerse messages waiting to be read, all channels together (a burst of edits of the same messages
# takes one place each, the newest state); past it a new one is set aside and its channel's history
# read again once its queue is read.
PENDING_LIMIT = 2_000
# The account channels are read again from the store this often (other processes' saves).
CHANNELS_REFRESH_SECONDS = 60.0
# A channel whose PixVerse message met the database away has its history read again after these
# (doubling while the database stays away).
CATCH_UP_FIRST_SECONDS = 1.0
CATCH_UP_MAX_SECONDS = 30.0


@dataclass
class _Asker:
    interaction: discord.Interaction
    until: float  # time.monotonic() past which the interaction's token is not used
    acknowledged: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(cls, interaction: discord.Interaction, window: float) -> _Asker:
        # Discord's 15 minutes count from the interaction's creation, not from our reply.
        age = max(0.0, (discord.utils.utcnow() - interaction.created_at).total_seconds())
        return cls(interaction, time.monotonic() + window - age)


def token_gone(exc: discord.HTTPException) -> bool:
    """The reply can no longer be edited through the interaction: deleted (404), or the
    interaction's token expired (401, code 50027)."""
    return isinstance(exc, discord.NotFound) or exc.status == 401


def refused_for_good(exc: discord.HTTPException) -> bool:
    """Discord refused the request for a reason no retry of this job's write changes: a 4xx other
    than a rate limit or the bot's own token refused (403 missing access, 404 unknown channel,
    400 an archived thread …)."""
    return 400 <= exc.status < 500 and exc.status not in (401, 429)


def transient(exc: BaseException) -> bool:
    """A failed write worth trying again: Discord's 429 (after discord.py's own retries), a
    5xx, a connection lost on the way."""
    if isinstance(exc, discord.HTTPException):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError))


@contextlib.asynccontextmanager
async def answered_privately_on_failure(interaction: discord.Interaction) -> AsyncIterator[None]:
    """An image command answers "thinking…" in public before its slow part (the download, storing
    the image). If it then fails, that public answer is deleted, so that the refusal reaches the
    member alone (the tree's error path answers ephemerally)."""
    try:
        yield
    except Exception:
        if interaction.response.is_done():
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        raise


# At unload, the notices of jobs that just ended get this long to reach their members.
NOTICE_WAIT_SECONDS = 5.0
# A member's attachment is downloaded within this (the interaction's token lasts 15 minutes).
DOWNLOAD_SECONDS = 120.0


async def read_at_most(session: aiohttp.ClientSession, url: str, limit: int) -> bytes | None:
    """The body at ``url``, or None once it passes ``limit`` bytes: the download stops there, so no
    more than that is ever held, whatever size was announced."""
    async with session.get(url) as response:
        response.raise_for_status()
        data = bytearray()
        async for chunk in response.content.iter_chunked(256 * 1024):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)


async def attached_image(interaction: discord.Interaction, name: str, attachment: discord.Attachment | None,
                         session: aiohttp.ClientSession) -> Image | None:
    """A member's attachment as the catalogue's image: refused by its announced size before any
    download, then read from Discord's CDN within IMAGE_LIMIT (the bytes decide its type, in the
    catalogue)."""
    if attachment is None:
        return None
    if not isinstance(attachment, discord.Attachment):  # a client's option of another type
        raise ApiError(400, f"Param {name} must be a file attached to the command")
    if attachment.size > IMAGE_LIMIT:
        raise too_large(name, attachment.filename)
    try:
        # A download still under way when Discord's 3 s run short answers a public "thinking…" first
        # (as storing the image, with the job, does in _submit).
        data = await in_time(interaction, read_at_most(session, attachment.url, IMAGE_LIMIT), ephemeral=False)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Named by status or type only: the attachment's URL carries a signature.
        reason = exc.status if isinstance(exc, aiohttp.ClientResponseError) else type(exc).__name__
        raise ApiError(400, f"Param {name} ({echo(attachment.filename)}) could not be read from Discord"
                            f" ({reason}); please attach it again") from None
    if data is None:  # Discord announced less than it serves
        raise too_large(name, attachment.filename)
    return Image.given(attachment.filename, data)


def message_payload(message: discord.Message) -> dict[str, Any]:
    """A received message in the raw API shape the PixVerse parser reads (it knows no discord.py)."""
    reference = message.reference
    metadata = message.interaction_metadata
    return {
        "id": str(message.id),
        "channel_id": str(message.channel.id),
        "guild_id": str(message.guild.id) if message.guild else None,
        "author": {"id": str(message.author.id), "bot": message.author.bot},
        "content": message.content,
        "timestamp": message.created_at.isoformat(),
        "type": message.type.value,
        "flags": message.flags.value,
        "attachments": [
            {"id": str(a.id), "url": a.url, "proxy_url": a.proxy_url, "filename": a.filename, "size": a.size,
             "content_type": a.content_type}
            for a in message.attachments
        ],
        "embeds": [embed.to_dict() for embed in message.embeds],
        "components": [component.to_dict() for component in message.components],
        "message_reference": {"message_id": str(reference.message_id)} if reference and reference.message_id else None,
        "interaction_metadata": {"user": {"id": str(metadata.user.id)}} if metadata else None,
    }


def choices(verb: Verb, name: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=value, value=value) for value in CATALOGUE[verb].param(name).choices]


def descriptions(verb: Verb) -> dict[str, str]:
    return {param.name: param.description for param in CATALOGUE[verb].params}


def advertised(verb: Verb) -> dict[str, dict[str, Any]]:
    """What Discord's client is told of each option beyond its type (required, limits), from the
    catalogue; the bot itself accepts anything and answers with the catalogue's texts."""
    told: dict[str, dict[str, Any]] = {}
    for param in CATALOGUE[verb].params:
        facts: dict[str, Any] = {"required": True} if param.required else {}
        facts.update(param.limits("max_length", "min_value", "max_value"))
        if facts:
            told[param.name] = facts
    return told


THREADS = (discord.ChannelType.public_thread, discord.ChannelType.private_thread, discord.ChannelType.news_thread)


def require_posting(interaction: discord.Interaction) -> None:
    """A job's message is the command's reply for Discord's 15 minutes only; past them, or after a
    restart, the bot posts and edits it in the channel, with its embed, and replies to it to notify
    the member of the end. Without the permissions for that (Discord gives the bot's in each interaction), the end of a longer job could never reach
    the member: refused before anything is placed, naming what is missing."""
    granted = interaction.app_permissions
    channel_type = getattr(interaction.channel, "type", None)
    needed = [("View Channel", granted.view_channel),
              ("Send Messages in Threads", granted.send_messages_in_threads) if channel_type in THREADS
              else ("Send Messages", granted.send_messages),
              ("Embed Links", granted.embed_links),
              # the notice of the end replies to the job's channel message; Discord wants it for a reply
              ("Read Message History", granted.read_message_history)]
    missing = [name for name, has in needed if not has]
    if missing:
        names = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        raise ApiError(403, f"The bot cannot post in this channel: it needs {names} here to show a job"
                            " that lasts past Discord's 15 minutes or a restart. Ask a server manager to allow it,"
                            " or use another channel")


def body_of(verb: Verb, options: dict[str, Any]) -> dict[str, Any]:
    """The request body of a command, from its options (the catalogue's names)."""
    return {param.name: options[param.name] for param in CATALOGUE[verb].params if param.name in options}


class JobsCog(commands.Cog, name=JOBS_COG):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot
        settings = bot.settings
        self.interaction_window = settings.interaction_window_seconds
        self._askers: dict[str, _Asker] = {}
        # job id -> (its message's id, True when posted in the channel): known here, else read
        # from the job (after a restart).
        self._messages: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self.board = StatusBoard(self._write_status, transient=transient, burst=settings.status_channel_edits,
                                 window=settings.status_channel_window_seconds)
        self._queue_reads: dict[str, asyncio.Task] = {}  # server -> its queue being read again
        self._read_again: set[str] = set()
        # PixVerse's messages, read one at a time per channel, in the order they came: channel ->
        # (message id, edit) -> the newest payload (an edit replaces an edit of the same message still
        # waiting, in its place; a message's creation is never replaced by its edit).
        self._pending: dict[str, OrderedDict[tuple[str, bool], dict[str, Any]]] = {}
        self._pending_count = 0
        self._dropped = 0
        self._overflowed: set[str] = set()  # channels whose history is read again once their queue is read
        self._readers: dict[str, asyncio.Task] = {}
        self._catching_up: dict[str, asyncio.Task] = {}  # channels whose history waits for the database
        # Messages the bot does not follow are dropped before discord.py parses them (bot/gateway_filter.py).
        self.gate = MessageGate(self._wanted)
        self._follows = lambda payload: False
        self._own_id: str | None = None
        self._channels_task: asyncio.Task | None = None
        self._unsubscribe = None
        self._downloads: aiohttp.ClientSession | None = None  # members' attachments, from Discord's CDN
        self._notices: set[asyncio.Task] = set()  # the short messages telling members their job ended

    @property
    def downloads(self) -> aiohttp.ClientSession:
        if self._downloads is None:
            self._downloads = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DOWNLOAD_SECONDS))
        return self._downloads

    @property
    def dispatcher(self):
        return self.bot.core.dispatcher

    async def cog_load(self) -> None:
        self.bot.core.dispatcher.listeners.append(self)
        self.bot.add_dynamic_items(PressButton)
        backend = self.bot.core.dispatcher.backend
        if getattr(backend, "follows", None) is not None:
            # The account channels: read now, kept current by the account events of this process and
            # read again now and then for those of others.
            try:
                await backend.refresh_channels()
            except Exception:
                log.warning("Reading the account channels failed; they are read again in %g s",
                            CHANNELS_REFRESH_SECONDS, exc_info=True)
            events = getattr(self.bot.core, "events", None)
            if events is not None:
                self._unsubscribe = events.subscribe(self._account_event)
            self._channels_task = asyncio.create_task(self._refresh_channels(backend), name="account channels")
            self._follows = backend.follows
        elif getattr(backend, "observe", None) is not None:
            self._follows = lambda payload: bool((payload.get("author") or {}).get("bot"))
        self.gate.install(self.bot)

    async def cog_unload(self) -> None:
        self.gate.uninstall()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in [self._channels_task, *self._readers.values()]:
            if task is not None:
                task.cancel()
        with contextlib.suppress(RuntimeError):  # the Core already closed
            if self in self.bot.core.dispatcher.listeners:
                self.bot.core.dispatcher.listeners.remove(self)
        self.bot.remove_dynamic_items(PressButton)
        for task in [*self._queue_reads.values(), *self._catching_up.values()]:
            task.cancel()
        # The last states (a job that just ended) still reach their messages, and their notices.
        await self.board.close()
        if self._notices:
            await asyncio.wait(set(self._notices), timeout=NOTICE_WAIT_SECONDS)
            for task in self._notices:
                task.cancel()
        if self._downloads is not None:
            await self._downloads.close()

    # --- asking -----------------------------------------------------------------------

    async def _acknowledge(self, interaction: discord.Interaction, job: Job, position: int | None) -> None:
        """The command's reply is the job's status message. The job is placed already: nothing
        here fails the command (the member would ask again); a reply that could not be sent
        leaves the job to a channel message."""
        # Registered before the first await: the job may start (and be reported) at once.
        asker = self._askers[job.job_id] = _Asker.of(interaction, self.interaction_window)
        try:
            # Just queued, the job is last in its server's queue; the others' "of N" follow (_queue_moved).
            where = Position(position, position) if job.queued and position is not None else None
            status = status_message(job, where)
            if interaction.response.is_done():  # an image's slow download deferred already
                sent = await interaction.edit_original_response(
                    content=status.content, embed=status.embed, allowed_mentions=status.allowed_mentions)
                message_id = sent.id
            else:
                response = await interaction.response.send_message(
                    status.content, embed=status.embed, allowed_mentions=status.allowed_mentions)
                message_id = response.message_id
            self.board.shown(job, where)
            if message_id is not None:  # stored before any edit may store a channel message
                await self._keep_message(job.job_id, str(message_id), in_channel=False)
        except Exception as exc:
            self._askers.pop(job.job_id, None)
            log.warning("Could not answer the command of job %s (%s); it goes on in a channel message",
                        job.job_id, getattr(exc, "status", None) or type(exc).__name__)
        finally:
            asker.acknowledged.set()

    async def _keep_message(self, job_id: str, message_id: str, *, in_channel: bool) -> None:
        known = self._messages.get(job_id)
        if known is not None and known[1] and not in_channel:
            return  # a channel message took over already: the reply is not the job's message again
        self._messages[job_id] = (message_id, in_channel)
        self._messages.move_to_end(job_id)
        while len(self._messages) > TRACKED_JOBS:
            self._messages.popitem(last=False)
        try:
            await self.dispatcher.keep_status_message(job_id, message_id, in_channel=in_channel)
        except Exception:
            # Known here for as long as this process runs; after a restart the job gets a new message.
            log.warning("Could not store the status message of job %s", job_id, exc_info=True)

    async def _submit(self, interaction: discord.Interaction, verb: Verb, body: dict[str, Any]) -> None:
        guild_id = require_guild(interaction)
        require_posting(interaction)
        placed = await in_time(interaction, self.dispatcher.submit(
            guild_id=guild_id,
            requester_id=str(interaction.user.id),
            request_channel_id=str(interaction.channel_id),
            verb=verb,
            body=body,
        ), ephemeral=False)
        await self._acknowledge(interaction, placed.job, placed.queue_position)
        if placed.queue_position is not None:
            self._queue_moved(guild_id)  # the others' "of N" grew

    async def press(self, interaction: discord.Interaction, job_id: Any, button: Any) -> None:
        guild_id = require_guild(interaction)
        require_posting(interaction)
        job = await in_time(interaction, self.dispatcher.press(
            guild_id=guild_id,
            requester_id=str(interaction.user.id),
            request_channel_id=str(interaction.channel_id),
            job_id=job_id,
            button=button,
            is_manager=bool(interaction.permissions.manage_guild),
        ), ephemeral=False)
        await self._acknowledge(interaction, job, None)

    # --- telling ----------------------------------------------------------------------

    async def job_changed(self, job: Job) -> None:
        """Dispatcher callback: a job started or ended."""
        if not job.queued:
            self._queue_moved(job.guild_id)  # a slot was taken or freed: the waiting ones move up
        if job.request_channel_id == API_REQUESTER:
            return  # asked through the HTTP API: its replyUrl is told, not a Discord channel
        self._forget_expired_askers()
        if job.status in FINAL and self.board.has_shown_end(job.job_id):
            await self._final_shown(job)  # told again (Dispatcher.show_ends) after recording it failed
            return
        self.board.update(job)

    async def job_progressed(self, job: Job) -> None:
        """Dispatcher callback: PixVerse's progress (at most every few seconds per job)."""
        if job.request_channel_id != API_REQUESTER:
            self.board.update(job)

    def _queue_moved(self, guild_id: str) -> None:
        """The server's waiting jobs are read again soon (once however often told) and each
        one's message shows its new position."""
        if guild_id in self._queue_reads:
            self._read_again.add(guild_id)
            return
        self._queue_reads[guild_id] = asyncio.create_task(self._read_queue(guild_id), name=f"queue of {guild_id}")

    async def _read_queue(self, guild_id: str) -> None:
        try:
            while True:
                await asyncio.sleep(QUEUE_SETTLE_SECONDS)
                self._read_again.discard(guild_id)
                waiting = await self.dispatcher.waiting(guild_id)
                for number, job in enumerate(waiting, 1):
                    if job.request_channel_id != API_REQUESTER:
                        self.board.update(job, Position(number, len(waiting)))
                if guild_id not in self._read_again:
                    return
        except Exception:
            log.warning("Reading the queue of server %s failed", guild_id, exc_info=True)
        finally:
            self._queue_reads.pop(guild_id, None)

    def _forget_expired_askers(self) -> None:
        # A job ended by another process is never reported here: drop what has expired.
        now = time.monotonic()
        for job_id in [j for j, a in self._askers.items() if now >= a.until]:
            del self._askers[job_id]

    async def _write_status(self, job: Job, position: Position | None) -> None:
        """The board's writer: the job's message shows this state."""
        final = job.status in FINAL
        asker = self._askers.get(job.job_id)
        if asker is not None and time.monotonic() < asker.until:
            await asyncio.wait_for(asker.acknowledged.wait(), timeout=REPLY_WAIT_SECONDS)
        if asker is not None and job.job_id in self._askers and time.monotonic() < asker.until:
            status = status_message(job, position, mention=final)
            try:
                await asker.interaction.edit_original_response(**status.edit_fields())
            except discord.HTTPException as exc:
                if not token_gone(exc):
                    raise
                log.info("The reply of job %s cannot be edited (%s); the job goes on in a channel message",
                         job.job_id, exc.status)
            else:
                if final:
                    self._askers.pop(job.job_id, None)
                    await self._final_shown(job)
                    self._tell_the_end(job, asker.interaction.followup.send)
                return
        self._askers.pop(job.job_id, None)  # past the interaction's window: the channel's turn
        try:
            edited = await self._write_in_channel(job, position, final)
        except discord.HTTPException as exc:
            if not final or not refused_for_good(exc):
                raise
            # The channel is gone, closed to the bot, or refuses the message (an archived thread):
            # no later try would show the end either.
            log.warning("The end of job %s cannot be shown in channel %s (%s %s); not trying again",
                        job.job_id, job.request_channel_id, exc.status, exc.code)
            await self._final_shown(job)
            return
        if final:
            await self._final_shown(job)
            if edited is not None:  # a new message mentioning the member told them already
                self._tell_the_end(job, functools.partial(
                    self.bot.get_partial_messageable(int(job.request_channel_id), guild_id=int(job.guild_id)).send,
                    reference=discord.MessageReference(message_id=int(edited), channel_id=int(job.request_channel_id),
                                                       fail_if_not_exists=False)))

    def _tell_the_end(self, job: Job, send: Callable[..., Awaitable[Any]]) -> None:
        """The job's message shows its end by an edit, and Discord notifies no one of a mention in
        an edit: one short new message mentions the member (a followup of their command, or a reply
        to the job's channel message). Sent beside the board's writes, not in their turn; its
        failure changes nothing: the end is shown."""
        notice = end_notice(job)
        if notice is None:
            return
        content, allowed = notice

        async def tell() -> None:
            try:
                await send(content, allowed_mentions=allowed)
            except discord.HTTPException as exc:
                log.info("Could not tell the member the end of job %s (%s %s)", job.job_id, exc.status, exc.code)

        task = asyncio.create_task(tell(), name=f"end notice {job.job_id}")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _final_shown(self, job: Job) -> None:
        """Records that the member's message shows the job's end; if that fails, the end is told
        again later (Dispatcher.show_ends) and recorded then."""
        try:
            await self.dispatcher.final_shown(job.job_id)
        except Exception:
            log.warning("Could not record that the end of job %s is shown", job.job_id, exc_info=True)

    async def _write_in_channel(self, job: Job, position: Position | None, final: bool) -> str | None:
        """Edits the job's channel message, or posts it: the edited message's id, None when posted."""
        channel = self.bot.get_partial_messageable(int(job.request_channel_id), guild_id=int(job.guild_id))
        message_id, in_channel = self._messages.get(job.job_id) or (job.status_message_id, job.status_message_in_channel)
        if message_id is not None and in_channel:
            status = status_message(job, position, mention=final)
            try:
                await channel.get_partial_message(int(message_id)).edit(**status.edit_fields())
                return message_id
            except discord.NotFound:
                log.info("The message of job %s was deleted; posting it again", job.job_id)
        # The first channel message of the job names the member, so Discord tells them.
        status = status_message(job, position, mention=True)
        kwargs: dict[str, Any] = {"embed": status.embed, "allowed_mentions": status.allowed_mentions}
        if status.view is not None:
            kwargs["view"] = status.view
        sent = await channel.send(status.content, **kwargs)
        await self._keep_message(job.job_id, str(sent.id), in_channel=True)
        return None

    # --- observing PixVerse --------------------------------------------------------------

    async def _observe(self, payload: dict[str, Any]) -> None:
        try:
            dispatcher = self.dispatcher
        except RuntimeError:
            return  # the Core is closed: the next start reads it from the channel's history
        if dispatcher is None or dispatcher.closing:
            return  # shutting down: likewise
        observe = getattr(dispatcher.backend, "observe", None)
        if observe is None:
            return
        try:
            await observe(payload)
        except Exception as exc:
            if dispatcher.closing:
                # Shutting down under it (the database closes after the gateway): nothing is lost,
                # the next start reads the message again from the channel's history.
                log.debug("A PixVerse message was left for the next start's recovery", exc_info=True)
                return
            if isinstance(exc, StoreError):
                # Not lost: the channel's history is read again once the database answers.
                channel = str(payload.get("channel_id"))
                log.warning("A PixVerse message in channel %s waits for the database (%s); the channel's"
                            " history is read again once it answers", channel, exc)
                self._catch_up_later(channel)
                return
            log.exception("Reading a PixVerse message failed")

    def _catch_up_later(self, channel: str) -> None:
        """Has the channel's reader read its history again (after the messages waiting, one at a
        time as always) as soon as the database answers; once however often asked meanwhile."""
        if channel in self._catching_up:
            return

        async def once_it_answers() -> None:
            delay = CATCH_UP_FIRST_SECONDS
            try:
                while True:
                    await asyncio.sleep(delay)
                    try:
                        dispatcher = self.dispatcher
                        if dispatcher.closing:
                            return  # the next start reads the history, as after any stop
                        await dispatcher.jobs.open_at_pixverse(channel)
                    except RuntimeError:
                        return  # the Core is closed: likewise
                    except StoreError:
                        delay = min(CATCH_UP_MAX_SECONDS, 2 * delay)
                        continue
                    self._overflowed.add(channel)
                    self._start_reader(channel)
                    return
            finally:
                self._catching_up.pop(channel, None)

        self._catching_up[channel] = asyncio.create_task(once_it_answers(), name=f"PixVerse history of {channel}")

    def _wanted(self, data: dict[str, Any]) -> bool:
        """The gateway filter: a message this bot follows (PixVerse's in an account channel), or its own
        (discord.py keeps the views of the bot's messages current from their edits). In memory."""
        author = data.get("author")
        if self._own_id is None and self.bot.user is not None:
            self._own_id = str(self.bot.user.id)
        if isinstance(author, dict) and author.get("id") == self._own_id:
            return True
        return self._follows(data)

    def _account_event(self, name: str, fields: dict[str, Any]) -> None:
        backend = self.bot.core.dispatcher.backend
        if name == ACCOUNT_SAVED and fields.get("channel"):
            backend.channel_saved(str(fields["channel"]))
        elif name == ACCOUNT_DELETED and fields.get("channel"):
            backend.channel_deleted(str(fields["channel"]))

    async def _refresh_channels(self, backend: Any) -> None:
        while True:
            await asyncio.sleep(CHANNELS_REFRESH_SECONDS)
            try:
                await backend.refresh_channels()
            except Exception:
                log.warning("Reading the account channels failed; the next try is in %g s", CHANNELS_REFRESH_SECONDS,
                            exc_info=True)

    def _enqueue(self, payload: dict[str, Any], *, edit: bool) -> None:
        """Queues a PixVerse message for its channel's reader; bounded, the newest edit of a message wins."""
        channel = str(payload.get("channel_id"))
        key = (str(payload.get("id")), edit)
        queue = self._queue(channel)
        if key in queue:
            queue[key] = payload  # a newer state of a message still waiting replaces it, in arrival order
            queue.move_to_end(key)
            return
        if self._pending_count >= PENDING_LIMIT:
            # Not lost: once this channel's queue is read, its history is read again for the jobs
            # still open there (as a restart would), so a start or a result dropped here is found.
            self._dropped += 1
            self._overflowed.add(channel)
            if self._dropped % 1000 == 1:
                log.warning("%d PixVerse messages wait to be read; %d set aside since the start, read again from"
                            " the channels' history", self._pending_count, self._dropped)
        else:
            queue[key] = payload
            self._pending_count += 1
        self._start_reader(channel)

    def _queue(self, channel: str) -> OrderedDict[tuple[str, bool], dict[str, Any]]:
        """The channel's PixVerse messages waiting to be read (made when none waits)."""
        queue = self._pending.get(channel)
        if queue is None:
            queue = self._pending[channel] = OrderedDict()
        return queue

    def _start_reader(self, channel: str) -> None:
        """The channel's reader, unless one runs: it reads what waits, then the history if asked."""
        if channel not in self._readers:
            self._readers[channel] = asyncio.create_task(self._read_channel(channel, self._queue(channel)),
                                                         name=f"PixVerse messages of {channel}")

    async def _catch_up(self, channel: str) -> None:
        """Reads an account channel's history again for its jobs still open at PixVerse: what was
        set aside while too many messages waited, or met the database away, is found there."""
        try:
            dispatcher = self.dispatcher
            jobs = await dispatcher.jobs.open_at_pixverse(channel)
            if not jobs or dispatcher.closing:
                return
            token = await dispatcher.accounts.decrypt_token(jobs[0].guild_id, channel)
            if token is not None:
                register_secrets(token)
                await dispatcher.backend.resume(jobs, token)
        except StoreError as exc:
            log.warning("Reading channel %s's history again met the database away (%s); read again once it"
                        " answers", channel, exc)
            self._catch_up_later(channel)
        except Exception:
            log.warning("Reading channel %s's history again failed; the sweep ends what stays open", channel,
                        exc_info=True)

    async def _read_channel(self, channel: str, queue: OrderedDict[tuple[str, bool], dict[str, Any]]) -> None:
        """Reads a channel's waiting PixVerse messages, one at a time, oldest first, until none waits."""
        try:
            while queue or channel in self._overflowed:
                if not queue:
                    self._overflowed.discard(channel)
                    await self._catch_up(channel)
                    continue
                _, payload = queue.popitem(last=False)
                self._pending_count -= 1
                await self._observe(payload)
        finally:
            self._pending_count -= len(queue)  # cancelled (unloading): what still waits is dropped
            queue.clear()
            self._pending.pop(channel, None)
            self._readers.pop(channel, None)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is not None and message.author.bot and message.author != self.bot.user:
            payload = message_payload(message)
            if self._follows(payload):
                self._enqueue(payload, edit=False)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, event: discord.RawMessageUpdateEvent) -> None:
        # The raw event carries the whole message (API v10), in the shape the parser reads.
        if event.guild_id is not None and (event.data.get("author") or {}).get("bot"):
            payload = {**event.data, "guild_id": str(event.guild_id)}
            if self._follows(payload):
                self._enqueue(payload, edit=True)

    # --- commands ---------------------------------------------------------------------

    @core_validated_command(name=CATALOGUE[Verb.CREATE].slash_name, description=CATALOGUE[Verb.CREATE].description,
                            advertised=advertised(Verb.CREATE))
    @app_commands.guild_only()
    @app_commands.choices(style=choices(Verb.CREATE, "style"), aspect_ratio=choices(Verb.CREATE, "aspect_ratio"))
    @app_commands.describe(**descriptions(Verb.CREATE))
    async def create(
        self,
        interaction: discord.Interaction,
        prompt: str | None = None,
        style: str | None = None,
        aspect_ratio: str | None = None,
        negative_prompt: str | None = None,
        character: str | None = None,
    ) -> None:
        await self._submit(interaction, Verb.CREATE, body_of(Verb.CREATE, locals()))

    @core_validated_command(name=CATALOGUE[Verb.CREATE_SINGLE].slash_name,
                            description=CATALOGUE[Verb.CREATE_SINGLE].description,
                            advertised=advertised(Verb.CREATE_SINGLE))
    @app_commands.guild_only()
    @app_commands.choices(style=choices(Verb.CREATE_SINGLE, "style"),
                          aspect_ratio=choices(Verb.CREATE_SINGLE, "aspect_ratio"))
    @app_commands.describe(**descriptions(Verb.CREATE_SINGLE))
    async def create_single(
        self,
        interaction: discord.Interaction,
        prompt: str | None = None,
        style: str | None = None,
        aspect_ratio: str | None = None,
        negative_prompt: str | None = None,
        character: str | None = None,
        seed_value: int | None = None,
    ) -> None:
        await self._submit(interaction, Verb.CREATE_SINGLE, body_of(Verb.CREATE_SINGLE, locals()))

    @core_validated_command(name=CATALOGUE[Verb.ANIMATE].slash_name, description=CATALOGUE[Verb.ANIMATE].description,
                            advertised=advertised(Verb.ANIMATE))
    @app_commands.guild_only()
    @app_commands.choices(hd_quality=choices(Verb.ANIMATE, "hd_quality"))
    @app_commands.describe(**descriptions(Verb.ANIMATE))
    async def animate(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment | None = None,
        prompt: str | None = None,
        motion: int | None = None,
        seed_value: int | None = None,
        hd_quality: str | None = None,
    ) -> None:
        async with answered_privately_on_failure(interaction):
            require_posting(interaction)  # before the download
            image = await attached_image(interaction, "image", image, self.downloads)
            await self._submit(interaction, Verb.ANIMATE, body_of(Verb.ANIMATE, locals()))

    @core_validated_command(name=CATALOGUE[Verb.MEME_FACE].slash_name,
                            description=CATALOGUE[Verb.MEME_FACE].description, advertised=advertised(Verb.MEME_FACE))
    @app_commands.guild_only()
    @app_commands.choices(aspect_ratio=choices(Verb.MEME_FACE, "aspect_ratio"))
    @app_commands.describe(**descriptions(Verb.MEME_FACE))
    async def meme_face(
        self,
        interaction: discord.Interaction,
        face: discord.Attachment | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        seed_value: int | None = None,
        aspect_ratio: str | None = None,
    ) -> None:
        async with answered_privately_on_failure(interaction):
            require_posting(interaction)  # before the download
            face = await attached_image(interaction, "face", face, self.downloads)
            await self._submit(interaction, Verb.MEME_FACE, body_of(Verb.MEME_FACE, locals()))

    @core_validated_command(name=CATALOGUE[Verb.BUTTON].slash_name, description=CATALOGUE[Verb.BUTTON].description,
                            advertised=advertised(Verb.BUTTON))
    @app_commands.guild_only()
    @app_commands.choices(button=choices(Verb.BUTTON, "button"))
    @app_commands.describe(**descriptions(Verb.BUTTON))
    async def button(self, interaction: discord.Interaction, jobid: str | None = None, button: str | None = None) -> None:
        await self.press(interaction, jobid, button)

    @app_commands.command(name="pixverse-jobs",
                          description="This server's executing and waiting PixVerse jobs, or your own last 10")
    @app_commands.guild_only()
    @app_commands.describe(mine="Your own last 10 jobs in this server, finished ones included")
    async def jobs(self, interaction: discord.Interaction, mine: bool = False) -> None:
        guild_id = require_guild(interaction)
        if mine:
            jobs = await in_time(interaction, self.dispatcher.of_member(guild_id, str(interaction.user.id),
                                                                        limit=MINE_LIMIT), ephemeral=True)
            header = f"Your last PixVerse jobs in this server: {len(jobs)}"
            empty = "You have no PixVerse job in this server"
        else:
            # oldest first: the queue in its order
            jobs = await in_time(interaction, self.dispatcher.executing(guild_id), ephemeral=True)
            waiting = sum(job.queued for job in jobs)
            header = f"PixVerse jobs in this server: {len(jobs) - waiting} executing, {waiting} waiting"
            empty = "No PixVerse job is executing or waiting in this server"
        if not jobs:
            await reply(interaction, empty)
            return
        lines = []
        queued = 0
        for job in jobs:
            where = None
            if job.queued and not mine:
                queued += 1
                where = Position(queued, waiting)
            state = state_line(job, where)
            if (progress := shown_progress(job)) is not None:
                state = f"{job.status.value} {progress_bar(progress)}"
            who = "HTTP API" if job.requester_id == API_REQUESTER else f"<@{job.requester_id}>"
            lines.append(f"`{job.job_id}` · **{state}** · {job.verb.value} · {who}")
        embed = discord.Embed(title=header, description=fit_lines("", lines, limit=EMBED_DESCRIPTION).lstrip("\n"))
        await respond(interaction, header, embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    @core_validated_command(
        name="pixverse-job", description="One PixVerse job with all its fields", advertised={"jobid": {"required": True}}
    )
    @app_commands.guild_only()
    @app_commands.describe(jobid="The job's id")
    async def job(self, interaction: discord.Interaction, jobid: str | None = None) -> None:
        guild_id = require_guild(interaction)
        job = await in_time(interaction, self.dispatcher.get(jobid, guild_id), ephemeral=True)
        where = None
        if job.queued:
            waiting = [j.job_id for j in await in_time(interaction, self.dispatcher.waiting(guild_id), ephemeral=True)]
            if job.job_id in waiting:
                where = Position(waiting.index(job.job_id) + 1, len(waiting))
        embed = job_embed(job, where)
        message_id = (self._messages.get(job.job_id) or (job.status_message_id, False))[0]
        if message_id is not None and job.request_channel_id != API_REQUESTER:
            link = f"https://discord.com/channels/{job.guild_id}/{job.request_channel_id}/{message_id}"
            if len(embed.fields) < EMBED_FIELDS and len(embed) + len("Message") + len(link) <= EMBED_TOTAL:
                embed.add_field(name="Message", value=link, inline=False)
        await respond(interaction, f"{state_line(job, where)} · jobid: {job.job_id}", embed=embed, ephemeral=True,
                      allowed_mentions=discord.AllowedMentions.none())

    @core_validated_command(
        name="pixverse-cancel", description="Cancel a PixVerse job", advertised={"jobid": {"required": True}}
    )
    @app_commands.guild_only()
    @app_commands.describe(jobid="The job's id")
    async def cancel(self, interaction: discord.Interaction, jobid: str | None = None) -> None:
        guild_id = require_guild(interaction)
        job = await in_time(interaction, self.dispatcher.cancel(
            jobid, guild_id=guild_id, user_id=str(interaction.user.id), is_manager=interaction.permissions.manage_guild
        ), ephemeral=True)
        await reply(interaction, f"{job.status.value} · jobid: {job.job_id}")


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(JobsCog(bot))
