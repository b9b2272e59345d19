"""PixVerse's answers in the account's channel, read as job events.

This module is the **single place** where the PixVerse bot's undocumented message format is
interpreted: everything part 4 of ``pixverse-protocol.md`` marks as *assumed* (the content
layouts ``<@user> (prompt: P style: S aspect-ratio: R) ...``, ``(prompt: P motion: M)`` and
``(prompt: P)``, ``Waiting to start``, ``(NN%)``, the moderation / block / load embed
wordings, which message belongs to which account and job). Every wording and pattern is a
named module-level constant below, so that adapting to what the live bot really sends is a
change to this module only; the rest of the project sees only :class:`PixverseEvent` and
:func:`match_job`.

Pure and synchronous: no discord.py, no I/O. Messages are the raw Discord API message dicts
as JSON-decoded from the gateway ``MESSAGE_CREATE`` / ``MESSAGE_UPDATE`` events or from
``GET /channels/{id}/messages``. Nothing here raises on a malformed message: a message that
cannot be read (not a dict, no ``id``, no ``author``, ``embeds`` / ``attachments`` /
``components`` of the wrong type, ...) is ``None``; a single unreadable attachment, embed or
button inside an otherwise good message is skipped.

Decisions on points the protocol page leaves open (all documented at the code they govern):

* **Which parameter group.** Each command's replies show one group (the catalogue names which,
  by command): ``create`` ``(prompt: P style: S aspect-ratio: R)`` (create, create_single),
  ``animate`` ``(prompt: P motion: M)``, ``meme_face`` ``(prompt: P)``. The group is read from
  the content, after the first ``prompt:`` label, in this order: (1) ``animate`` if a
  `` motion: M)`` closes the content's group, i.e. only the trailer follows it (status groups
  ``(Waiting to start)`` / ``(NN%)``, ``Author: <@id>``, whitespace, the end:
  :data:`GROUP_TRAILER`); a create group ends in ``aspect-ratio: R)`` so this never takes a
  create reply, and it keeps an animate prompt containing ``style: Anime)`` from being read as
  a create; (2) ``create`` if there is a whitespace-preceded ``style:`` label (the rule below,
  unchanged); (3) ``animate`` with the last `` motion: M)`` of all (a trailer unknown here);
  (4) ``meme_face``: the prompt ends at the first ``)`` after which only the trailer follows,
  else at the last ``)``. No ``prompt:`` label, or none of these: no group (None), no prompt.
  Known limitations, inherent in the layouts: a ``meme_face`` prompt containing `` style:`` is
  read as a create, one containing `` motion: 3)`` (or ending in ``motion: 3``) as an animate;
  a prompt that itself contains ``) (Waiting to start`` (or ``) (50%``) can be cut short at
  its own ``)`` when only trailer-like text follows it up to the group's ``)``: meme_face
  ``"x) (Waiting to start"`` is read as ``"x"`` (``"x) (Waiting to start) y"`` is read whole).
  Such a reply does not match its job (:func:`match_job` wants the same group and prompt),
  and the job ends by its timeout.
* **Where the create prompt ends.** The prompt is the text after the first ``prompt:`` label and
  before a whitespace-preceded ``style:`` label. A prompt may itself contain ``style:``, so
  the delimiter is the *last* ``style:`` whose value is a known style (:data:`KNOWN_STYLES`)
  followed by ``aspect-ratio:``, ``)`` or the end of the content, i.e. one that looks like
  the whole style field; when none does (a style unknown here, or a changed layout), the
  last ``style:`` of all. The real label comes after the prompt, and what follows it
  (``aspect-ratio: R) Author: <@user>``) never contains ``style:``, so "last" is right
  whenever the prompt is the only free text. A known style followed by just any word is
  deliberately *not* enough: ``"in the style: Anime of old"`` inside a prompt must not cut
  it short when the real style is one this module does not know yet. Known limitation: a
  prompt containing ``style: Anime aspect-ratio:`` together with a style unknown here is cut
  at the prompt's own label; new styles are added to the catalogue (bot/dispatch/catalogue.py).
* **Keywords are never looked for inside the prompt.** ``Waiting to start``, ``(NN%)``,
  ``Too many``, ``queue is full`` and ``<@id>`` mentions are searched in the content with
  the prompt cut out, and in embeds with the prompt text removed, so a prompt such as
  ``"too many cats (50%)"`` does not turn a ``Waiting to start`` message into a refusal.
* **Order.** Embed moderation titles, then embed block titles, then load refusal (embed or
  content), then content starting with ``Failed``, then completion, progress, started. A
  load refusal worded ``Failed: too many ...`` is therefore OVERLOADED (retried), not FAILED:
  of the two mistakes, retrying a failure at most twice is the cheaper one.
* **Started** needs ``Waiting to start``, or a prompt in the content (for an animate group, an
  empty one will do) with no percentage and no attachments; a PixVerse message with neither
  (help texts, unknown embeds, ...) is None.
* **Which job.** A new message goes to a job of the group the content shows with the same
  prompt; an animate group with an empty prompt goes to an animate job without one. An event
  with no group (no ``prompt:`` label) only matches by message id or reply reference.
* **Text every engine stores.** A NUL or a lone surrogate in the text read here (content, embed
  titles and descriptions, button labels, attachments' names, addresses and types) becomes
  U+FFFD, the replacement character (``bot.text.storable_text``). An id carrying one is not an id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.dispatch.catalogue import STYLES
from bot.text import UNSTORABLE, storable_text

__all__ = [
    "GROUP_ANIMATE",
    "GROUP_CREATE",
    "GROUP_MEME_FACE",
    "REPLY_GROUPS",
    "Attachment",
    "Button",
    "EventKind",
    "JobCandidate",
    "PixverseEvent",
    "extract_prompt",
    "match_job",
    "message_belongs_to_account",
    "normalise_prompt",
    "parse_message",
]

# --- The assumed format: every wording PixVerse is expected to use --------------------------

#: The parameter groups a reply's content shows; the catalogue (bot/dispatch/catalogue.py)
#: names, for each command, the group its replies use.
GROUP_CREATE = "create"  # (prompt: P style: S aspect-ratio: R): create, create_single
GROUP_ANIMATE = "animate"  # (prompt: P motion: M), M an integer; P may be empty
GROUP_MEME_FACE = "meme_face"  # (prompt: P)
REPLY_GROUPS: tuple[str, ...] = (GROUP_CREATE, GROUP_ANIMATE, GROUP_MEME_FACE)

#: The label that opens the prompt in the content (the first occurrence is the label).
PROMPT_LABEL = re.compile(r"prompt:")
#: The label that ends the prompt: ``style:`` preceded by whitespace (the match starts at the
#: whitespace, which belongs to the delimiter, not to the prompt).
STYLE_LABEL = re.compile(r"\sstyle:[ \t]*")
#: Style values PixVerse shows (as the dispatcher issue spells them); used to tell the real
#: ``style:`` label from one inside the prompt.
KNOWN_STYLES: tuple[str, ...] = STYLES  # the catalogue's: a new style is added there
#: What follows a style value in the assumed layout ``style: S aspect-ratio: R)``.
AFTER_STYLE_FIELD = re.compile(r"\s+aspect-ratio:|\s*\)|\s*\Z")

#: The field that ends an animate's prompt: whitespace, ``motion:``, the integer M and the
#: group's closing ``)`` (the match starts at the whitespace, which is not the prompt's). An
#: animate without a prompt shows ``prompt:  motion: M)``: that whitespace may be the space
#: right after ``prompt:``.
MOTION_FIELD = re.compile(r"\smotion:[ \t]*\d+[ \t]*\)")
#: The closing ``)`` of a group (a meme_face's prompt ends before it).
GROUP_CLOSE = re.compile(r"\)")

#: ``(NN%)`` in the content: progress. Decimals are accepted and truncated.
PROGRESS_PATTERN = re.compile(r"\(\s*(\d{1,3})(?:[.,]\d+)?\s*%\s*\)")
#: Content of the first reply before rendering starts.
WAITING_TO_START = re.compile(r"waiting to start", re.IGNORECASE)

#: Embed title words of a refused prompt (checked first). ``MODERATED_WORDS`` make it
#: MODERATED; a title matching only ``FAILED_TITLE_WORDS`` (``Invalid prompt``) is FAILED.
MODERATED_WORDS = re.compile(r"banned|moderat|filter", re.IGNORECASE)
FAILED_TITLE_WORDS = re.compile(r"invalid prompt", re.IGNORECASE)
#: Content (after leading mentions) that starts like this is a failure.
FAILED_CONTENT_PREFIX = re.compile(r"failed\b", re.IGNORECASE)
#: Embed title words that mean the account needs a human: the job fails, the account leaves
#: rotation with the title as its error.
ACCOUNT_BLOCK_WORDS = re.compile(
    r"pending mod message|blocked|subscription|verify|action required", re.IGNORECASE
)
#: Load refusal, in an embed (title or description) or the content: retried elsewhere.
OVERLOADED_WORDS = re.compile(r"too many|queue is full", re.IGNORECASE)

#: A video attachment: the content type starts with this, or the file name ends with this
#: (either one is enough; both compared ignoring case).
VIDEO_CONTENT_TYPE_PREFIX = "video/"
VIDEO_FILENAME_SUFFIX = ".mp4"

#: A user mention as Discord writes it in content: ``<@id>`` or the legacy ``<@!id>``.
USER_MENTION = re.compile(r"<@!?(\d+)>")
#: Mentions (and whitespace) at the start of the content, dropped before reading its words.
LEADING_MENTIONS = re.compile(r"^(?:\s*<@!?\d+>)*\s*")

#: What may follow a group's closing ``)`` (matched right after it): any number of status
#: groups ``(Waiting to start)`` / ``(NN%)`` and ``Author: <@id>``, whitespace, the end of the
#: content. Possessive quantifiers keep it linear on long runs of whitespace.
_STATUS_GROUP = rf"\(\s*{WAITING_TO_START.pattern}\s*\)|{PROGRESS_PATTERN.pattern}"
_AUTHOR = rf"author:\s*{USER_MENTION.pattern}"
GROUP_TRAILER = re.compile(rf"(?:\s*+(?:{_STATUS_GROUP}|{_AUTHOR}))*+\s*\Z", re.IGNORECASE)

#: Discord component types: action row, button. Buttons are looked for in rows and in any
#: newer nesting (``components`` / ``accessory``); link buttons have no ``custom_id``.
COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2

#: ``error`` is a short reason: at most this many characters of one line.
ERROR_SUMMARY_LIMIT = 200


# --- Public types ----------------------------------------------------------------------------


class EventKind(StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    MODERATED = "moderated"
    ACCOUNT_BLOCKED = "account_blocked"
    OVERLOADED = "overloaded"


@dataclass(frozen=True)
class Attachment:
    url: str
    filename: str
    size: int | None
    content_type: str | None

    @property
    def is_video(self) -> bool:
        """``content_type`` starts with ``video/`` or the file name ends in ``.mp4`` (any case)."""
        if self.content_type and self.content_type.lower().startswith(VIDEO_CONTENT_TYPE_PREFIX):
            return True
        return self.filename.lower().endswith(VIDEO_FILENAME_SUFFIX)


@dataclass(frozen=True)
class Button:
    """A pressable button: ``label`` is its label, or its emoji's name (``"🔀"``) when it has none."""

    label: str
    custom_id: str


@dataclass(frozen=True)
class PixverseEvent:
    kind: EventKind
    message_id: str
    content: str
    prompt: str | None
    progress: int | None = None
    attachments: tuple[Attachment, ...] = ()
    buttons: tuple[Button, ...] = ()
    error: str | None = None
    error_details: str | None = None
    reference_message_id: str | None = None
    message_flags: int = 0
    #: The parameter group the content showed (:data:`REPLY_GROUPS`); None when none was read.
    group: str | None = None


@dataclass(frozen=True)
class JobCandidate:
    job_id: str
    prompt: str | None
    is_followup: bool
    parent_message_id: str | None
    message_id: str | None
    submitted_order: int
    #: The parameter group its command's replies show (ignored for follow-ups).
    group: str = GROUP_CREATE


# --- Prompt ----------------------------------------------------------------------------------


def normalise_prompt(text: str) -> str:
    """Whitespace-normalised: runs of whitespace (newlines included) become one space, trimmed."""
    return " ".join(text.split())


def _style_value_fits(content: str, value_start: int) -> bool:
    """A known style value starts here and is followed by what follows the style field."""
    for style in KNOWN_STYLES:
        if content.startswith(style, value_start) and AFTER_STYLE_FIELD.match(content, value_start + len(style)):
            return True
    return False


def _followed_by_trailer(content: str, pos: int) -> bool:
    """Only :data:`GROUP_TRAILER` follows ``pos`` (the index right after a group's ``)``)."""
    return GROUP_TRAILER.match(content, pos) is not None


def _create_end(content: str, start: int) -> int | None:
    """Where a create prompt starting at ``start`` ends: the chosen `` style:`` label, or None."""
    # The delimiter's whitespace may be the very space after "prompt:" (an empty prompt).
    delimiters = list(STYLE_LABEL.finditer(content, start))
    if not delimiters:
        return None
    fitting = [d for d in delimiters if _style_value_fits(content, d.end())]
    return (fitting or delimiters)[-1].start()


def _animate_end(content: str, start: int, *, closing_only: bool) -> int | None:
    """The last `` motion: M)`` (only one that closes the group if ``closing_only``), or None."""
    fields = [
        m for m in MOTION_FIELD.finditer(content, start) if not closing_only or _followed_by_trailer(content, m.end())
    ]
    return fields[-1].start() if fields else None


def _meme_face_end(content: str, start: int) -> int | None:
    """The first ``)`` followed by only the trailer, else the last ``)``, or None."""
    closes = [m.start() for m in GROUP_CLOSE.finditer(content, start)]
    for close in closes:
        if _followed_by_trailer(content, close + 1):
            return close
    return closes[-1] if closes else None


def _read_group(content: str, group: str | None = None) -> tuple[str, int, int, int] | None:
    """``(group, label_start, prompt_start, prompt_end)`` of the prompt in ``content``, or None.

    ``content[prompt_start:prompt_end]`` is the raw prompt; ``content[label_start:prompt_end]``
    is what to cut out before looking for keywords. With ``group`` None, the group is the
    content's (see the module docstring for the order); else the content is read as ``group``.
    """
    label = PROMPT_LABEL.search(content)
    if label is None:
        return None
    start = label.end()
    if group is None:
        steps = [
            (GROUP_ANIMATE, lambda: _animate_end(content, start, closing_only=True)),
            (GROUP_CREATE, lambda: _create_end(content, start)),
            (GROUP_ANIMATE, lambda: _animate_end(content, start, closing_only=False)),
            (GROUP_MEME_FACE, lambda: _meme_face_end(content, start)),
        ]
    elif group == GROUP_CREATE:
        steps = [(GROUP_CREATE, lambda: _create_end(content, start))]
    elif group == GROUP_ANIMATE:
        steps = [
            (GROUP_ANIMATE, lambda: _animate_end(content, start, closing_only=True)),
            (GROUP_ANIMATE, lambda: _animate_end(content, start, closing_only=False)),
        ]
    elif group == GROUP_MEME_FACE:
        steps = [(GROUP_MEME_FACE, lambda: _meme_face_end(content, start))]
    else:
        return None
    for name, find_end in steps:
        end = find_end()
        if end is not None:
            return name, label.start(), start, max(start, end)
    return None


def extract_prompt(content: str, group: str | None = GROUP_CREATE) -> str | None:
    """The prompt of ``content`` read as ``group``'s layout, whitespace-normalised; None if absent or empty.

    The default reads the create layout (between ``prompt: `` and `` style:``), as before the
    other groups existed; ``group=None`` reads whichever group the content shows, as
    :func:`parse_message` does.
    """
    if not isinstance(content, str):
        return None
    read = _read_group(content, group)
    if read is None:
        return None
    prompt = normalise_prompt(content[read[2] : read[3]])
    return prompt or None


def _without_prompt(content: str) -> str:
    """The content with the prompt cut out, where keywords and mentions are looked for."""
    read = _read_group(content)
    if read is None:
        return content
    return content[: read[1]] + content[read[3] :]


# --- Reading the raw message -----------------------------------------------------------------


class _Malformed(Exception):
    """The message is not readable; parse_message answers None."""


def _id(value: Any) -> str | None:
    """A snowflake as a string: strings as given, JSON integers as their digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value and UNSTORABLE.search(value) is None:
        return value
    return None


def _list_of(message: Mapping[str, Any], key: str) -> list[Any]:
    value = message.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(key)
    return value


def _text(value: Any) -> str:
    return storable_text(value) if isinstance(value, str) else ""


def _attachments(message: Mapping[str, Any]) -> tuple[Attachment, ...]:
    out = []
    for raw in _list_of(message, "attachments"):
        if not isinstance(raw, Mapping):
            continue
        url = raw.get("url") if isinstance(raw.get("url"), str) and raw.get("url") else raw.get("proxy_url")
        if not isinstance(url, str) or not url:
            continue  # nothing to download: not an attachment we can use
        url = storable_text(url)
        filename = raw.get("filename")
        if not isinstance(filename, str) or not filename:
            filename = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        filename = storable_text(filename)
        size = raw.get("size")
        size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
        content_type = raw.get("content_type")
        content_type = storable_text(content_type) if isinstance(content_type, str) and content_type else None
        out.append(Attachment(url=url, filename=filename, size=size, content_type=content_type))
    return tuple(out)


def _walk_components(components: Iterable[Any]) -> Iterator[Mapping[str, Any]]:
    """Every component, depth first: action rows and any newer nesting (``components``, ``accessory``)."""
    for component in components:
        if not isinstance(component, Mapping):
            continue
        yield component
        children = component.get("components")
        if isinstance(children, list):
            yield from _walk_components(children)
        accessory = component.get("accessory")
        if isinstance(accessory, Mapping):
            yield from _walk_components([accessory])


def _buttons(message: Mapping[str, Any]) -> tuple[Button, ...]:
    out = []
    for component in _walk_components(_list_of(message, "components")):
        if component.get("type") != COMPONENT_BUTTON:
            continue
        custom_id = component.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            continue  # link buttons (and premium buttons) cannot be pressed by interaction
        label = component.get("label")
        if not isinstance(label, str) or not label.strip():
            emoji = component.get("emoji")
            label = emoji.get("name") if isinstance(emoji, Mapping) else None
        if not isinstance(label, str) or not label.strip():
            continue  # nothing to address it by
        out.append(Button(label=storable_text(label.strip()), custom_id=custom_id))
    return tuple(out)


@dataclass(frozen=True)
class _Embed:
    title: str
    description: str

    @property
    def details(self) -> str:
        return "\n".join(part for part in (self.title, self.description) if part)

    @property
    def summary(self) -> str:
        return _summary(self.title or self.description)


def _embeds(message: Mapping[str, Any]) -> list[_Embed]:
    out = []
    for raw in _list_of(message, "embeds"):
        if not isinstance(raw, Mapping):
            continue
        embed = _Embed(title=_text(raw.get("title")).strip(), description=_text(raw.get("description")).strip())
        if embed.title or embed.description:
            out.append(embed)
    return out


def _summary(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:ERROR_SUMMARY_LIMIT] if lines else ""


def _strip_leading_mentions(text: str) -> str:
    return LEADING_MENTIONS.sub("", text, count=1).strip()


def _scrub(text: str, raw_prompt: str | None) -> str:
    """``text`` with the prompt removed (raw and normalised forms), for keyword searches."""
    if raw_prompt:
        for form in (raw_prompt.strip(), normalise_prompt(raw_prompt)):
            if form:
                text = text.replace(form, " ")
    return text


# --- Classification --------------------------------------------------------------------------


def parse_message(message: dict) -> PixverseEvent | None:
    """The job event a PixVerse message stands for, or None (not recognisable, or malformed)."""
    try:
        return _parse(message)
    except _Malformed:
        return None
    except (AttributeError, TypeError, ValueError, KeyError):  # pragma: no cover - belt and braces
        return None


def _parse(message: Any) -> PixverseEvent | None:
    if not isinstance(message, Mapping):
        return None
    message_id = _id(message.get("id"))
    author = message.get("author")
    if message_id is None or not isinstance(author, Mapping) or _id(author.get("id")) is None:
        return None
    content = message.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        return None
    content = storable_text(content)
    flags = message.get("flags")
    flags = flags if isinstance(flags, int) and not isinstance(flags, bool) else 0
    reference = message.get("message_reference")
    reference_id = _id(reference.get("message_id")) if isinstance(reference, Mapping) else None

    embeds = _embeds(message)
    attachments = _attachments(message)
    buttons = _buttons(message)

    read = _read_group(content)
    group = read[0] if read else None
    raw_prompt = content[read[2] : read[3]] if read else None
    prompt = normalise_prompt(raw_prompt) if raw_prompt is not None else None
    prompt = prompt or None
    status_text = content[: read[1]] + content[read[3] :] if read else content
    stripped_content = _strip_leading_mentions(content)

    def event(kind: EventKind, **fields: Any) -> PixverseEvent:
        return PixverseEvent(
            kind=kind,
            message_id=message_id,
            content=content,
            prompt=prompt,
            attachments=attachments,
            buttons=buttons,
            reference_message_id=reference_id,
            message_flags=flags,
            group=group,
            **fields,
        )

    # 1. Refused prompt (embed title), then blocked account (embed title).
    for embed in embeds:
        if MODERATED_WORDS.search(embed.title):
            return event(EventKind.MODERATED, error=embed.summary, error_details=embed.details)
        if FAILED_TITLE_WORDS.search(embed.title):
            return event(EventKind.FAILED, error=embed.summary, error_details=embed.details)
    for embed in embeds:
        if ACCOUNT_BLOCK_WORDS.search(embed.title):
            return event(EventKind.ACCOUNT_BLOCKED, error=embed.title, error_details=embed.details)

    # 2. Refused for load: embeds first, then content (never inside the prompt).
    for embed in embeds:
        if OVERLOADED_WORDS.search(_scrub(embed.details, raw_prompt)):
            return event(EventKind.OVERLOADED, error=embed.summary, error_details=embed.details)
    if OVERLOADED_WORDS.search(status_text):
        return event(EventKind.OVERLOADED, error=_summary(stripped_content), error_details=stripped_content)

    # 3. Content that starts with "Failed" (after the mention).
    if FAILED_CONTENT_PREFIX.match(stripped_content):
        kind = EventKind.MODERATED if MODERATED_WORDS.search(_strip_leading_mentions(status_text)) else EventKind.FAILED
        return event(kind, error=_summary(stripped_content), error_details=stripped_content)

    # 4. Completed: at least one video.
    if any(attachment.is_video for attachment in attachments):
        return event(EventKind.COMPLETED)

    # 5. Progress: the last "(NN%)" outside the prompt.
    percentages = PROGRESS_PATTERN.findall(status_text)
    if percentages:
        return event(EventKind.PROGRESS, progress=min(int(percentages[-1]), 100))

    # 6. Started: "Waiting to start", or a prompt (an animate's may be empty) with nothing else yet.
    has_prompt = prompt is not None or group == GROUP_ANIMATE
    if WAITING_TO_START.search(status_text) or (has_prompt and not attachments):
        return event(EventKind.STARTED)
    return None


# --- Ownership -------------------------------------------------------------------------------


def _interaction_user_id(message: Mapping[str, Any]) -> str | None:
    # ``interaction_metadata`` is current; ``interaction`` is its deprecated predecessor.
    for key in ("interaction_metadata", "interaction"):
        meta = message.get(key)
        if isinstance(meta, Mapping):
            user = meta.get("user")
            if isinstance(user, Mapping):
                user_id = _id(user.get("id"))
                if user_id is not None:
                    return user_id
    return None


def message_users(message: dict) -> frozenset[str]:
    """The users a message is for: the user of the interaction that caused it
    (``interaction_metadata.user.id``) and the users its content mentions (``<@id>`` / ``<@!id>``)
    outside the prompt (a prompt that happens to contain someone's mention does not make it theirs).
    """
    try:
        if not isinstance(message, Mapping):
            return frozenset()
        users = set()
        interaction_user = _interaction_user_id(message)
        if interaction_user is not None:
            users.add(interaction_user)
        content = message.get("content")
        if isinstance(content, str):
            users.update(m.group(1) for m in USER_MENTION.finditer(_without_prompt(content)))
        return frozenset(users)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - belt and braces
        return frozenset()


def message_belongs_to_account(message: dict, *, pixverse_user_id: str, account_user_id: str) -> bool:
    """Written by the PixVerse bot user, and for this account's user (:func:`message_users`)."""
    try:
        if not isinstance(message, Mapping):
            return False
        author = message.get("author")
        if not isinstance(author, Mapping) or _id(author.get("id")) != str(pixverse_user_id):
            return False
        return str(account_user_id) in message_users(message)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - belt and braces
        return False


# --- Which job -------------------------------------------------------------------------------

#: Kinds that are a job's first reply: among equally good candidates, prefer a job that has
#: no PixVerse message yet (two jobs with the same prompt, or two buttons pressed on one
#: result, then each get their own "Waiting to start").
FIRST_REPLY_KINDS = frozenset({EventKind.STARTED, EventKind.MODERATED, EventKind.OVERLOADED})
#: Kinds that only come after a first reply: prefer a job that already has its message.
LATER_REPLY_KINDS = frozenset({EventKind.PROGRESS, EventKind.COMPLETED})


def _pick(event: PixverseEvent, candidates: list[JobCandidate]) -> str | None:
    """The oldest candidate, preferring those in the state the event's kind suggests."""
    if not candidates:
        return None
    ordered = sorted(enumerate(candidates), key=lambda pair: (pair[1].submitted_order, pair[0]))
    ordered_jobs = [job for _, job in ordered]
    if event.kind in FIRST_REPLY_KINDS:
        preferred = [job for job in ordered_jobs if job.message_id is None]
    elif event.kind in LATER_REPLY_KINDS:
        preferred = [job for job in ordered_jobs if job.message_id is not None]
    else:
        preferred = []
    return (preferred or ordered_jobs)[0].job_id


def match_job(event: PixverseEvent, candidates: Sequence[JobCandidate]) -> str | None:
    """The job (of one account, in its channel) that ``event`` belongs to, or None.

    1. A job that already owns ``event.message_id`` (an edit of its message).
    2. A reply (``reference_message_id``): the follow-up job whose ``parent_message_id`` is the
       referenced message; else a job that owns the referenced message; else the oldest
       follow-up job. With no follow-up job at all, the reply is matched like any message.
    3. The oldest non-follow-up job of the event's group (``candidate.group == event.group``)
       whose prompt equals ``event.prompt``, both whitespace-normalised, case-sensitive
       (equality: "cat" never matches "black cat"). An animate event with an empty prompt
       goes to the oldest animate job whose prompt is None or empty; an event of another
       group without a prompt, or of no group, matches nothing here.

    "Oldest" is the lowest ``submitted_order``, preferring for a first reply (started,
    moderated, overloaded) a job with no message yet, and for progress/completion a job that
    has one.
    """
    jobs = [job for job in candidates if isinstance(job, JobCandidate)]
    owners = [job for job in jobs if job.message_id is not None and job.message_id == event.message_id]
    if owners:
        return _pick(event, owners)

    followups = [job for job in jobs if job.is_followup]
    reference = event.reference_message_id
    if reference is not None:
        by_parent = [job for job in followups if job.parent_message_id == reference]
        if by_parent:
            return _pick(event, by_parent)
        by_reply = [job for job in jobs if job.message_id is not None and job.message_id == reference]
        if by_reply:
            return _pick(event, by_reply)
        if followups:
            return _pick(event, followups)

    if event.group is None:
        return None
    wanted = normalise_prompt(event.prompt or "")
    if not wanted and event.group != GROUP_ANIMATE:
        return None
    same_prompt = [
        job
        for job in jobs
        if not job.is_followup and job.group == event.group and normalise_prompt(job.prompt or "") == wanted
    ]
    return _pick(event, same_prompt)
