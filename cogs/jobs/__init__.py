"""Members' PixVerse jobs: create, press a result button, list, show, cancel.

The cog turns interactions into Dispatcher calls and the dispatcher's job changes into
messages: followups of the member's interaction while Discord lets the bot use it (15
minutes), otherwise a message in the channel where the job was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import escape_markdown

from bot.slash import MESSAGE_LIMIT, core_validated_command, fit_lines, reason_lines, require_guild
from bot.dispatch.models import API_REQUESTER, FINAL, Job, JobStatus, Verb
from bot.accounts.validation import echo
from bot.dispatch.catalogue import BUTTONS, CATALOGUE
from bot.dispatch.images import IMAGE_LIMIT, Image, too_large
from bot.errors import ApiError
from bot.tree import answer_failure, reply

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

log = logging.getLogger(__name__)

# Discord lets a bot follow up an interaction for 15 minutes; keep a margin.
INTERACTION_WINDOW = 14 * 60
CUSTOM_ID_PREFIX = "pixverse:press"


@dataclass
class _Asker:
    interaction: discord.Interaction
    since: float = field(default_factory=time.monotonic)
    acknowledged: asyncio.Event = field(default_factory=asyncio.Event)


def describe(job: Job) -> str:
    params = {**job.params, "prompt": escape_markdown(job.prompt or "")}
    for param in CATALOGUE[job.verb].images:
        if isinstance(params.get(param.name), dict):
            params[param.name] = {**params[param.name],
                                  "filename": escape_markdown(str(params[param.name].get("filename") or ""))}
    return CATALOGUE[job.verb].describe(params, job.parent_job_id)


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


# Discord's embed limits.
EMBED_TITLE, EMBED_DESCRIPTION, EMBED_FIELDS, EMBED_FIELD_VALUE, EMBED_TOTAL = 256, 4096, 25, 1024, 6000
COLOURS = {JobStatus.COMPLETED: 0x57F287, JobStatus.FAILED: 0xED4245, JobStatus.MODERATED: 0xED4245,
           JobStatus.CANCELLED: 0x99AAB5}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_embed(job: Job) -> discord.Embed:
    """One job as a person reads it, within Discord's embed limits whatever its prompt, reason or
    number of videos: state, times, prompt, parameters, video links, reason. The account's
    channel is an admin's detail and is not shown."""
    embed = discord.Embed(title=_cut(f"{job.verb.value} · {job.state_word}", EMBED_TITLE),
                          description=_cut(escape_markdown(job.prompt or ""), EMBED_DESCRIPTION) or None,
                          colour=COLOURS.get(job.status, 0x5865F2))
    fields: list[tuple[str, str, bool]] = [("Job id", f"`{job.job_id}`", False)]
    if job.verb is Verb.BUTTON:
        fields += [("Button", str(job.params.get("button")), True), ("On job", f"`{job.parent_job_id}`", True)]
    for param in CATALOGUE[job.verb].params:
        value = job.params.get(param.name)
        if param.name in ("prompt", "jobid", "button") or value is None:
            continue
        shown = value.get("filename") if isinstance(value, dict) else value
        fields.append((param.name, escape_markdown(str(shown)), True))
    fields.append(("Asked", f"<t:{int(job.created_at)}:f>", True))
    fields.append(("Updated", f"<t:{int(job.updated_at)}:R>", True))
    if job.progress is not None and job.executing:
        fields.append(("Progress", f"{job.progress}%", True))
    links = [f"[Video {n}]({a['url']})" for n, a in enumerate(job.attachments, 1) if a.get("url")]
    chunk: list[str] = []
    for link in links:  # as many fields as the links need, each within its limit
        if chunk and len("\n".join([*chunk, link])) > EMBED_FIELD_VALUE:
            fields.append(("Videos", "\n".join(chunk), False))
            chunk = []
        if len(link) <= EMBED_FIELD_VALUE:
            chunk.append(link)
    if chunk:
        fields.append(("Videos", "\n".join(chunk), False))
    reason = reason_lines(job.error, job.error_details)
    if reason:
        fields.append(("Reason", _cut(escape_markdown("\n".join(reason)), EMBED_FIELD_VALUE), False))
    for name, value, inline in fields[:EMBED_FIELDS]:
        if len(embed) + len(name) + len(value) > EMBED_TOTAL:
            break
        embed.add_field(name=name, value=value, inline=inline)
    return embed


# An attachment is downloaded before the command is answered when it comes within this (Discord
# wants an answer within 3 s); a slower download goes on after a public "thinking…" answer.
DOWNLOAD_BEFORE_ANSWER_SECONDS = 2.0
# Past this since the interaction was made, the command answers before storing the image.
ANSWER_BEFORE_STORING_AFTER = 1.0


async def attached_image(interaction: discord.Interaction, name: str, attachment: discord.Attachment | None) -> Image | None:
    """A member's attachment as the catalogue's image: refused by its announced size before any
    download, then read from Discord's CDN (the bytes decide its type, in the catalogue)."""
    if attachment is None:
        return None
    if attachment.size > IMAGE_LIMIT:
        raise too_large(name, attachment.filename)
    download = asyncio.ensure_future(attachment.read())
    waited = (discord.utils.utcnow() - interaction.created_at).total_seconds()  # Discord's 3 s count from here
    try:
        done, _ = await asyncio.wait({download}, timeout=max(0.0, DOWNLOAD_BEFORE_ANSWER_SECONDS - waited))
        if not done and not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        data = await download
        if not interaction.response.is_done() and (
                discord.utils.utcnow() - interaction.created_at).total_seconds() > ANSWER_BEFORE_STORING_AFTER:
            await interaction.response.defer(thinking=True)  # storing the image must not pass the 3 s
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
        # Named by status or type only: the attachment's URL carries a signature.
        reason = exc.status if isinstance(exc, discord.HTTPException) else type(exc).__name__
        raise ApiError(400, f"Param {name} ({echo(attachment.filename)}) could not be read from Discord"
                            f" ({reason}); please attach it again") from None
    finally:
        download.cancel()
    return Image.given(attachment.filename, data)


def job_text(job: Job) -> str:
    lines = [f"{job.status.value} · jobid: {job.job_id}", describe(job)]
    if job.status is JobStatus.COMPLETED:
        lines += [a["url"] for a in job.attachments if a.get("url")]
    elif job.status in FINAL:
        lines += reason_lines(job.error, job.error_details)
    return "\n".join(lines)[:MESSAGE_LIMIT]


class PressButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{CUSTOM_ID_PREFIX}:(?P<label>U[1-4]|V[1-4]|ReDo|🔀):(?P<job>[A-Za-z0-9_:\-]+)"):
    """A result button under a completed job; clicking it runs /pixverse-button.

    Dynamic (the job id is in the custom_id), so it works after a restart as well."""

    def __init__(self, job_id: str, label: str) -> None:
        emoji = label if label == "🔀" else None
        super().__init__(
            discord.ui.Button(
                label=None if emoji else label,
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                custom_id=f"{CUSTOM_ID_PREFIX}:{label}:{job_id}",
            )
        )
        self.job_id = job_id
        self.label = label

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match) -> PressButton:
        return cls(match["job"], match["label"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog: JobsCog | None = interaction.client.get_cog(JobsCog.__cog_name__)  # type: ignore[union-attr]
        try:
            if cog is None:
                raise RuntimeError("jobs cog is not loaded")
            await cog.press(interaction, self.job_id, self.label)
        except Exception as exc:
            await answer_failure(interaction, exc)


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


def result_view(job: Job) -> discord.ui.View | None:
    labels = [b["label"] for b in job.buttons if b.get("label") in BUTTONS]
    if job.status is not JobStatus.COMPLETED or not labels:
        return None
    view = discord.ui.View(timeout=None)
    for label in labels:
        view.add_item(PressButton(job.job_id, label))
    return view


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


def body_of(verb: Verb, options: dict[str, Any]) -> dict[str, Any]:
    """The request body of a command, from its options (the catalogue's names)."""
    return {param.name: options[param.name] for param in CATALOGUE[verb].params if param.name in options}


class JobsCog(commands.Cog, name="PixVerse jobs"):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot
        self._askers: dict[str, _Asker] = {}

    @property
    def dispatcher(self):
        return self.bot.core.dispatcher

    async def cog_load(self) -> None:
        self.bot.core.dispatcher.listeners.append(self)
        self.bot.add_dynamic_items(PressButton)

    async def cog_unload(self) -> None:
        if self in self.bot.core.dispatcher.listeners:
            self.bot.core.dispatcher.listeners.remove(self)
        self.bot.remove_dynamic_items(PressButton)

    # --- asking -----------------------------------------------------------------------

    async def _acknowledge(self, interaction: discord.Interaction, job: Job, position: int | None) -> None:
        # Registered before the first await: the job may start (and be reported) at once.
        asker = self._askers[job.job_id] = _Asker(interaction)
        try:
            if position is None:
                if not interaction.response.is_done():  # an image's slow download deferred already
                    await interaction.response.defer(thinking=True)
            else:
                # After a deferral (an image command), the followup takes the deferred answer's place.
                send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
                await send(
                    f"created · jobid: {job.job_id}\n{describe(job)}\n"
                    f"All PixVerse accounts are busy: the job waits at position {position} in this server's queue",
                    allowed_mentions=discord.AllowedMentions.none(),
                )
        finally:
            asker.acknowledged.set()

    async def _submit(self, interaction: discord.Interaction, verb: Verb, body: dict[str, Any]) -> None:
        guild_id = require_guild(interaction)
        placed = await self.dispatcher.submit(
            guild_id=guild_id,
            requester_id=str(interaction.user.id),
            request_channel_id=str(interaction.channel_id),
            verb=verb,
            body=body,
        )
        await self._acknowledge(interaction, placed.job, placed.queue_position)

    async def press(self, interaction: discord.Interaction, job_id: Any, button: Any) -> None:
        guild_id = require_guild(interaction)
        job = await self.dispatcher.press(
            guild_id=guild_id,
            requester_id=str(interaction.user.id),
            request_channel_id=str(interaction.channel_id),
            job_id=job_id,
            button=button,
            is_manager=bool(interaction.permissions.manage_guild),
        )
        await self._acknowledge(interaction, job, None)

    # --- telling ----------------------------------------------------------------------

    async def job_changed(self, job: Job) -> None:
        """Dispatcher callback: a job started or ended."""
        if job.request_channel_id == API_REQUESTER:
            return  # asked through the HTTP API: its replyUrl is told, not a Discord channel
        self._forget_expired_askers()
        text, view = job_text(job), result_view(job)
        final = job.status in FINAL
        asker = self._askers.pop(job.job_id, None) if final else self._askers.get(job.job_id)
        if asker is not None and time.monotonic() - asker.since < INTERACTION_WINDOW:
            try:
                await asyncio.wait_for(asker.acknowledged.wait(), timeout=10)
                kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
                if view is not None:
                    kwargs["view"] = view
                await asker.interaction.followup.send(text, **kwargs)
                return
            except (discord.HTTPException, asyncio.TimeoutError) as exc:
                log.info("Follow-up for job %s failed (%s); posting in the channel", job.job_id, exc)
        await self._post_in_channel(job, text, view)

    def _forget_expired_askers(self) -> None:
        # A job ended by another process is never reported here: drop what has expired.
        now = time.monotonic()
        for job_id in [j for j, a in self._askers.items() if now - a.since >= INTERACTION_WINDOW]:
            del self._askers[job_id]

    async def _post_in_channel(self, job: Job, text: str, view: discord.ui.View | None) -> None:
        channel = self.bot.get_partial_messageable(int(job.request_channel_id), guild_id=int(job.guild_id))
        requester = discord.Object(int(job.requester_id))
        kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions(users=[requester])}
        if view is not None:
            kwargs["view"] = view
        try:
            await channel.send(f"<@{job.requester_id}> {text}"[:MESSAGE_LIMIT], **kwargs)
        except discord.HTTPException as exc:
            log.warning("Could not post the update of job %s in channel %s: %s", job.job_id, job.request_channel_id, exc.status)

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
        except Exception:
            if dispatcher.closing:
                # Shutting down under it (the database closes after the gateway): nothing is lost,
                # the next start reads the message again from the channel's history.
                log.debug("A PixVerse message was left for the next start's recovery", exc_info=True)
                return
            log.exception("Reading a PixVerse message failed")

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is not None and message.author.bot and message.author != self.bot.user:
            await self._observe(message_payload(message))

    @commands.Cog.listener()
    async def on_raw_message_edit(self, event: discord.RawMessageUpdateEvent) -> None:
        # The raw event carries the whole message (API v10), in the shape the parser reads.
        if event.guild_id is not None and (event.data.get("author") or {}).get("bot"):
            await self._observe({**event.data, "guild_id": str(event.guild_id)})

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
            image = await attached_image(interaction, "image", image)
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
            face = await attached_image(interaction, "face", face)
            await self._submit(interaction, Verb.MEME_FACE, body_of(Verb.MEME_FACE, locals()))

    @core_validated_command(name=CATALOGUE[Verb.BUTTON].slash_name, description=CATALOGUE[Verb.BUTTON].description,
                            advertised=advertised(Verb.BUTTON))
    @app_commands.guild_only()
    @app_commands.choices(button=choices(Verb.BUTTON, "button"))
    @app_commands.describe(**descriptions(Verb.BUTTON))
    async def button(self, interaction: discord.Interaction, jobid: str | None = None, button: str | None = None) -> None:
        await self.press(interaction, jobid, button)

    @app_commands.command(name="pixverse-jobs", description="This server's executing PixVerse jobs")
    @app_commands.guild_only()
    async def jobs(self, interaction: discord.Interaction) -> None:
        guild_id = require_guild(interaction)
        jobs = await self.dispatcher.executing(guild_id)
        if not jobs:
            await reply(interaction, "No PixVerse job is executing in this server")
            return
        lines = [
            f"jobid: {job.job_id} · {job.state_word} · {job.verb.value} · "
            + ("HTTP API" if job.requester_id == API_REQUESTER else f"<@{job.requester_id}>")
            for job in jobs
        ]
        await reply(interaction, fit_lines(f"Executing PixVerse jobs in this server: {len(jobs)}", lines))

    @core_validated_command(
        name="pixverse-job", description="One PixVerse job with all its fields", advertised={"jobid": {"required": True}}
    )
    @app_commands.guild_only()
    @app_commands.describe(jobid="The job's id")
    async def job(self, interaction: discord.Interaction, jobid: str | None = None) -> None:
        guild_id = require_guild(interaction)
        job = await self.dispatcher.get(jobid, guild_id)
        await interaction.response.send_message(f"{job.state_word} · jobid: {job.job_id}", embed=job_embed(job),
                                                ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @core_validated_command(
        name="pixverse-cancel", description="Cancel a PixVerse job", advertised={"jobid": {"required": True}}
    )
    @app_commands.guild_only()
    @app_commands.describe(jobid="The job's id")
    async def cancel(self, interaction: discord.Interaction, jobid: str | None = None) -> None:
        guild_id = require_guild(interaction)
        job = await self.dispatcher.cancel(
            jobid, guild_id=guild_id, user_id=str(interaction.user.id), is_manager=interaction.permissions.manage_guild
        )
        await reply(interaction, f"{job.status.value} · jobid: {job.job_id}")


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(JobsCog(bot))
