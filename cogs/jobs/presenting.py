"""How a job looks to members: its status message (content, embed, buttons) and /pixverse-job's
embed, always within Discord's limits whatever the prompt, the reason or the number of videos.

Every text about a job names it ``jobid: <id>`` and starts with its state word (``waiting``,
``created``, ``started``, ``progress``, ``completed``, ``failed``, ``moderated``, ``cancelled``),
so members can copy the id into the other commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import discord
from discord.utils import escape_markdown

from bot.dispatch.catalogue import BUTTONS, CATALOGUE
from bot.dispatch.models import FINAL, Job, JobStatus, Verb
from bot.slash import MESSAGE_LIMIT, reason_lines

CUSTOM_ID_PREFIX = "pixverse:press"
JOBS_COG = "PixVerse jobs"

# Discord's limits.
EMBED_TITLE, EMBED_DESCRIPTION, EMBED_FIELDS, EMBED_FIELD_VALUE, EMBED_TOTAL = 256, 4096, 25, 1024, 6000
BUTTON_LABEL, LINK_URL = 80, 512

GREEN, RED, GREY, BLURPLE = 0x57F287, 0xED4245, 0x99AAB5, 0x5865F2
BAR_CELLS = 10


@dataclass(frozen=True)
class Position:
    """Where a waiting job is in its server's queue: ``number`` of ``of``."""

    number: int
    of: int


def progress_bar(percent: int) -> str:
    """``▰▰▰▱▱▱▱▱▱▱ 37%``: a cell per started tenth."""
    percent = max(0, min(100, percent))
    filled = percent // (100 // BAR_CELLS)
    return "▰" * filled + "▱" * (BAR_CELLS - filled) + f" {percent}%"


def shown_progress(job: Job) -> int | None:
    """The percentage a running job's message shows with its bar; None before PixVerse told one,
    while it waits, and once it ended."""
    return job.progress if job.executing and not job.queued else None


def state_line(job: Job, position: Position | None = None) -> str:
    """The job's state as its message's first words: ``waiting · position 2 of 3``,
    ``progress 37%``, ``completed`` …"""
    if job.queued:
        return f"waiting · position {position.number} of {position.of}" if position else "waiting"
    if job.status is JobStatus.PROGRESS and job.progress is not None:
        return f"progress {job.progress}%"
    return job.status.value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _colour(job: Job) -> int:
    if job.status is JobStatus.COMPLETED:
        return GREEN
    if job.status in FINAL:
        return RED  # failed, moderated, cancelled, timed out
    return GREY if job.queued else BLURPLE


def video_urls(job: Job) -> list[str]:
    return [a["url"] for a in job.attachments if a.get("url")] if job.status is JobStatus.COMPLETED else []


def job_embed(job: Job, position: Position | None = None) -> discord.Embed:
    """One job as a person reads it: the verb and prompt as title, the state (with its progress
    bar) as description, then the job id, parameters, times, video links and reason. The
    account's channel is an admin's detail and is not shown."""
    if job.verb is Verb.BUTTON:
        what = f"{job.params.get('button')} on {job.parent_job_id}"  # no member's text in it
    else:
        what = escape_markdown(job.prompt or "")
    title = _cut(f"{job.verb.value} · {what}" if what else job.verb.value, EMBED_TITLE)
    description = f"**{state_line(job, position)}**"
    if (progress := shown_progress(job)) is not None:
        description += f"\n{progress_bar(progress)}"
    prompt = escape_markdown(job.prompt or "")
    if job.verb is not Verb.BUTTON and prompt and not title.endswith(prompt):
        description += "\n\n" + prompt  # the title could not hold it whole
    embed = discord.Embed(title=title, description=_cut(description, EMBED_DESCRIPTION), colour=_colour(job))
    fields: list[tuple[str, str, bool]] = [("Job id", f"`{job.job_id}`", False)]
    if job.verb is Verb.BUTTON:
        fields += [("Button", str(job.params.get("button")), True), ("On job", f"`{job.parent_job_id}`", True)]
    for param in CATALOGUE[job.verb].params:
        value = job.params.get(param.name)
        if param.name in ("prompt", "jobid", "button") or value is None:
            continue
        shown = value.get("filename") if isinstance(value, dict) else value
        fields.append((param.name, _cut(escape_markdown(str(shown)), EMBED_FIELD_VALUE) or "-", True))
    fields.append(("Asked", f"<t:{int(job.created_at)}:f>", True))
    fields.append(("Updated", f"<t:{int(job.updated_at)}:R>", True))
    links = [f"[Video {n}]({url})" for n, url in enumerate(video_urls(job), 1)]
    chunk: list[str] = []
    for link in links:  # as many fields as the links need, each within its limit
        if chunk and len("\n".join([*chunk, link])) > EMBED_FIELD_VALUE:
            fields.append(("Videos", "\n".join(chunk), False))
            chunk = []
        if len(link) <= EMBED_FIELD_VALUE:
            chunk.append(link)
    if chunk:
        fields.append(("Videos", "\n".join(chunk), False))
    if job.status in FINAL and job.status is not JobStatus.COMPLETED:
        # A completed job has no reason to show: what it met on the way (a move off an account
        # Discord refused, a retry after PixVerse's overload) names an account's channel and its
        # trouble, which are the admins' (GET /jobs/?jobid= keeps it for them).
        reason = reason_lines(job.error, job.error_details)
        if reason:
            fields.append(("Reason", _cut(escape_markdown("\n".join(reason)), EMBED_FIELD_VALUE), False))
    for name, value, inline in fields[:EMBED_FIELDS]:
        if len(embed) + len(name) + len(value) > EMBED_TOTAL:
            break
        embed.add_field(name=name, value=value, inline=inline)
    return embed


def end_notice(job: Job) -> tuple[str, discord.AllowedMentions] | None:
    """The short message that tells the member their job ended, when its status message showed the
    end by an edit: Discord notifies a mention only in a new message, never in an edit. None for a
    cancelled job (whoever cancelled it knows, and the message shows who)."""
    if job.status not in FINAL or job.status is JobStatus.CANCELLED:
        return None
    ended = "your video is ready" if job.status is JobStatus.COMPLETED else "your job ended without a video"
    allowed = discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                      users=[discord.Object(int(job.requester_id))])
    return f"<@{job.requester_id}> {state_line(job)} · jobid: {job.job_id} · {ended}", allowed


@dataclass(frozen=True)
class StatusMessage:
    """What a job's status message shows, ready for send() or edit()."""

    content: str
    embed: discord.Embed
    view: discord.ui.View | None
    allowed_mentions: discord.AllowedMentions

    def edit_fields(self) -> dict[str, Any]:
        """The message's whole state, for an edit (``view=None`` takes the buttons away)."""
        return {"content": self.content, "embed": self.embed, "view": self.view,
                "allowed_mentions": self.allowed_mentions}


def status_message(job: Job, position: Position | None = None, *, mention: bool = False) -> StatusMessage:
    """The job's one message. ``mention``: the member is named and Discord told to mention them
    (no one else): a new channel message, and the final state."""
    lines = [f"{state_line(job, position)} · jobid: {job.job_id}"]
    if mention:
        lines[0] = f"<@{job.requester_id}> {lines[0]}"
    if (progress := shown_progress(job)) is not None:
        lines.append(progress_bar(progress))
    urls = video_urls(job)
    if urls:
        lines.append(urls[0])  # Discord previews it as a player
    allowed = (discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                       users=[discord.Object(int(job.requester_id))])
               if mention else discord.AllowedMentions.none())
    return StatusMessage("\n".join(lines)[:MESSAGE_LIMIT], job_embed(job, position), result_view(job), allowed)


# --- result buttons ------------------------------------------------------------------------

def _button_label(label: str) -> tuple[str | None, str | None, int]:
    """PixVerse's button → (label, emoji, row): upscales, variations, then ReDo and 🔀."""
    if label.startswith("U"):
        return f"Upscale {label[1:]}", None, 0
    if label.startswith("V"):
        return f"Variation {label[1:]}", None, 1
    if label == "ReDo":
        return "Redo", None, 2
    return None, label, 2


class PressButton(discord.ui.DynamicItem[discord.ui.Button],
                  template=rf"{CUSTOM_ID_PREFIX}:(?P<label>U[1-4]|V[1-4]|ReDo|🔀):(?P<job>[A-Za-z0-9_:\-]+)"):
    """A result button under a completed job; clicking it runs /pixverse-button.

    Dynamic (the job id is in the custom_id), so it works after a restart as well."""

    def __init__(self, job_id: str, label: str) -> None:
        text, emoji, row = _button_label(label)
        super().__init__(
            discord.ui.Button(label=text, emoji=emoji, row=row,
                              style=discord.ButtonStyle.primary if row == 0 else discord.ButtonStyle.secondary,
                              custom_id=f"{CUSTOM_ID_PREFIX}:{label}:{job_id}")
        )
        self.job_id = job_id
        self.label = label

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any) -> PressButton:
        return cls(match["job"], match["label"])

    async def callback(self, interaction: discord.Interaction) -> None:
        from bot.tree import answer_failure

        cog: Any = interaction.client.get_cog(JOBS_COG)  # type: ignore[union-attr]
        try:
            if cog is None:
                raise RuntimeError("jobs cog is not loaded")
            await cog.press(interaction, self.job_id, self.label)
        except Exception as exc:
            await answer_failure(interaction, exc)


def result_view(job: Job) -> discord.ui.View | None:
    """Under a completed job: its result buttons grouped by meaning (row 1 upscales, row 2
    variations, row 3 ReDo and 🔀) and a Link button to each video (row 4)."""
    if job.status is not JobStatus.COMPLETED:
        return None
    view = discord.ui.View(timeout=None)
    for label in dict.fromkeys(b["label"] for b in job.buttons if b.get("label") in BUTTONS):  # once each
        view.add_item(PressButton(job.job_id, label))
    for n, url in enumerate(video_urls(job)[:5], 1):
        if len(url) <= LINK_URL:
            view.add_item(discord.ui.Button(label=f"Video {n}", url=url, row=3))
    return view if view.children else None
