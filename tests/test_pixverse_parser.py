"""bot.pixverse.parser: PixVerse's messages, built as part 5 of the protocol page has the fake send them."""

from __future__ import annotations

import copy

import pytest

from bot.pixverse.parser import (
    GROUP_ANIMATE,
    GROUP_CREATE,
    GROUP_MEME_FACE,
    REPLY_GROUPS,
    Attachment,
    Button,
    EventKind,
    JobCandidate,
    PixverseEvent,
    extract_prompt,
    match_job,
    message_belongs_to_account,
    parse_message,
)

PIXVERSE = "1123456789012345678"  # the application id is the bot user's id
FOREIGN_BOT = "1987654321098765432"
USER = "700000000000000001"
OTHER_USER = "700000000000000002"
CHANNEL = "333333333333333333"
GUILD = "111111111111111111"

WAITING_ID = "1300000000000000001"
RESULT_ID = "1300000000000000002"
FOLLOWUP_ID = "1300000000000000003"

PROMPT = "a black cat on a red sofa"
STYLE = "Realistic"
RATIO = "16:9"

BUTTON_LABELS = ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", "🔀"]


def header(prompt: str = PROMPT, *, user: str = USER, style: str = STYLE, ratio: str = RATIO) -> str:
    return f"<@{user}> (prompt: {prompt} style: {style} aspect-ratio: {ratio})"


def author(user_id: str = PIXVERSE) -> dict:
    return {"id": user_id, "username": "PixVerse", "discriminator": "0", "global_name": None, "avatar": None, "bot": True}


def message(message_id: str, content: str, *, by: str = PIXVERSE, **extra) -> dict:
    base = {
        "id": message_id,
        "type": 0,
        "channel_id": CHANNEL,
        "guild_id": GUILD,
        "author": author(by),
        "content": content,
        "timestamp": "2025-01-01T00:00:00.000000+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "flags": 0,
    }
    base.update(extra)
    return base


def interaction_metadata(user: str = USER, *, kind: int = 2) -> dict:
    return {
        "id": "1290000000000000001",
        "type": kind,
        "user": {"id": user, "username": "account", "discriminator": "0", "global_name": None, "avatar": None},
        "authorizing_integration_owners": {"0": GUILD},
        "name": "create",
    }


def waiting_message(prompt: str = PROMPT, *, user: str = USER, message_id: str = WAITING_ID, by: str = PIXVERSE) -> dict:
    return message(
        message_id,
        f"{header(prompt, user=user)} (Waiting to start)",
        by=by,
        type=20,
        interaction_metadata=interaction_metadata(user),
    )


def progress_edit(waiting: dict, percent: int) -> dict:
    edited = copy.deepcopy(waiting)
    edited["content"] = edited["content"].replace("(Waiting to start)", f"({percent}%)")
    edited["edited_timestamp"] = "2025-01-01T00:00:05.000000+00:00"
    return edited


def video(i: int) -> dict:
    return {
        "id": f"140000000000000000{i}",
        "filename": f"pixverse_{i}.mp4",
        "size": 1_000_000 + i,
        "url": f"https://cdn.example/attachments/{CHANNEL}/{i}/pixverse_{i}.mp4?ex=1",
        "proxy_url": f"https://media.example/attachments/{CHANNEL}/{i}/pixverse_{i}.mp4?ex=1",
        "content_type": "video/mp4",
    }


def expected_video(i: int) -> Attachment:
    return Attachment(
        url=f"https://cdn.example/attachments/{CHANNEL}/{i}/pixverse_{i}.mp4?ex=1",
        filename=f"pixverse_{i}.mp4",
        size=1_000_000 + i,
        content_type="video/mp4",
    )


def button(label: str) -> dict:
    if label == "🔀":  # emoji-only, as PixVerse's shuffle button
        return {"type": 2, "style": 2, "emoji": {"id": None, "name": "🔀"}, "custom_id": "pv::shuffle::abc"}
    return {"type": 2, "style": 2, "label": label, "custom_id": f"pv::{label.lower()}::abc"}


def result_components() -> list[dict]:
    rows = [BUTTON_LABELS[0:4], BUTTON_LABELS[4:8], BUTTON_LABELS[8:10]]
    built = [{"type": 1, "components": [button(label) for label in row]} for row in rows]
    # A link button has no custom_id: it cannot be pressed by interaction and is skipped.
    built[2]["components"].append({"type": 2, "style": 5, "label": "Website", "url": "https://app.pixverse.ai"})
    return built


EXPECTED_BUTTONS = tuple(
    Button(label=label, custom_id="pv::shuffle::abc" if label == "🔀" else f"pv::{label.lower()}::abc")
    for label in BUTTON_LABELS
)


def final_message(prompt: str = PROMPT, *, videos: int = 4, message_id: str = RESULT_ID, user: str = USER, **extra) -> dict:
    return message(
        message_id,
        f"{header(prompt, user=user)} Author: <@{user}>",
        attachments=[video(i) for i in range(1, videos + 1)],
        components=result_components(),
        mentions=[{"id": user, "username": "account"}],
        **extra,
    )


def embed_message(title: str | None, description: str | None = None, *, content: str = "", message_id: str = WAITING_ID) -> dict:
    embed: dict = {"type": "rich", "color": 15548997}
    if title is not None:
        embed["title"] = title
    if description is not None:
        embed["description"] = description
    return message(message_id, content, type=20, interaction_metadata=interaction_metadata(), embeds=[embed])


def event(kind: EventKind, content: str, **fields) -> PixverseEvent:
    defaults = {"message_id": WAITING_ID, "prompt": PROMPT, "group": GROUP_CREATE}
    defaults.update(fields)
    return PixverseEvent(kind=kind, content=content, **defaults)


WAITING_CONTENT = f"{header()} (Waiting to start)"
FINAL_CONTENT = f"{header()} Author: <@{USER}>"


# --- parse_message: the job's life, part 5 ---------------------------------------------------

LIFECYCLE = [
    pytest.param(waiting_message(), event(EventKind.STARTED, WAITING_CONTENT), id="waiting-to-start"),
    pytest.param(
        progress_edit(waiting_message(), 37),
        event(EventKind.PROGRESS, f"{header()} (37%)", progress=37),
        id="37-percent-edit",
    ),
    pytest.param(
        progress_edit(waiting_message(), 0),
        event(EventKind.PROGRESS, f"{header()} (0%)", progress=0),
        id="0-percent",
    ),
    pytest.param(
        final_message(),
        event(
            EventKind.COMPLETED,
            FINAL_CONTENT,
            message_id=RESULT_ID,
            attachments=tuple(expected_video(i) for i in range(1, 5)),
            buttons=EXPECTED_BUTTONS,
        ),
        id="final-create-4-videos-10-buttons",
    ),
    pytest.param(
        final_message(videos=1),
        event(
            EventKind.COMPLETED,
            FINAL_CONTENT,
            message_id=RESULT_ID,
            attachments=(expected_video(1),),
            buttons=EXPECTED_BUTTONS,
        ),
        id="final-create-single-1-video",
    ),
    pytest.param(
        # A button's answer: a reply (type 19) to the result message, flags kept for pressing.
        message(
            FOLLOWUP_ID,
            f"{header()} (Waiting to start)",
            type=19,
            flags=32768,
            message_reference={"type": 0, "message_id": RESULT_ID, "channel_id": CHANNEL, "guild_id": GUILD},
            interaction_metadata=interaction_metadata(kind=3),
        ),
        event(
            EventKind.STARTED,
            WAITING_CONTENT,
            message_id=FOLLOWUP_ID,
            reference_message_id=RESULT_ID,
            message_flags=32768,
        ),
        id="followup-reply-waiting",
    ),
    pytest.param(
        # The prompt is the content's only free text: its keywords are not read as status.
        waiting_message("too many cats (50%) queue is full, Failed Waiting to start"),
        event(
            EventKind.STARTED,
            f"{header('too many cats (50%) queue is full, Failed Waiting to start')} (Waiting to start)",
            prompt="too many cats (50%) queue is full, Failed Waiting to start",
        ),
        id="keywords-inside-prompt-do-not-misfire",
    ),
    pytest.param(
        progress_edit(waiting_message("a clock showing (99%)"), 37),
        event(
            EventKind.PROGRESS,
            f"{header('a clock showing (99%)')} (37%)",
            prompt="a clock showing (99%)",
            progress=37,
        ),
        id="percentage-inside-prompt-ignored",
    ),
    pytest.param(
        message(WAITING_ID, header()),
        event(EventKind.STARTED, header()),
        id="prompt-without-percentage-is-started",
    ),
    pytest.param(
        message(FOLLOWUP_ID, f"<@{USER}> Waiting to start", message_reference={"message_id": RESULT_ID}),
        event(
            EventKind.STARTED,
            f"<@{USER}> Waiting to start",
            message_id=FOLLOWUP_ID,
            prompt=None,
            reference_message_id=RESULT_ID,
            group=None,
        ),
        id="waiting-without-prompt",
    ),
    pytest.param(
        message(WAITING_ID, f"{header()} (37.5 %)"),
        event(EventKind.PROGRESS, f"{header()} (37.5 %)", progress=37),
        id="decimal-percentage-truncated",
    ),
]


@pytest.mark.parametrize("raw, expected", LIFECYCLE)
def test_lifecycle_messages(raw, expected):
    assert parse_message(raw) == expected


def test_completion_by_filename_or_content_type():
    no_type = {"id": "1", "filename": "OUT.MP4", "size": 5, "url": "https://cdn.example/OUT.MP4"}
    webm = {"id": "2", "filename": "clip.webm", "size": 6, "url": "https://cdn.example/clip.webm", "content_type": "Video/WebM"}
    for attachment, expected in [
        (no_type, Attachment(url="https://cdn.example/OUT.MP4", filename="OUT.MP4", size=5, content_type=None)),
        (webm, Attachment(url="https://cdn.example/clip.webm", filename="clip.webm", size=6, content_type="Video/WebM")),
    ]:
        parsed = parse_message(message(RESULT_ID, FINAL_CONTENT, attachments=[attachment]))
        assert (parsed.kind, parsed.attachments) == (EventKind.COMPLETED, (expected,))


def test_image_attachment_is_not_a_completion():
    image = {"id": "1", "filename": "preview.png", "size": 7, "url": "https://cdn.example/preview.png", "content_type": "image/png"}
    with_percent = parse_message(message(WAITING_ID, f"{header()} (52%)", attachments=[image]))
    assert (with_percent.kind, with_percent.progress) == (EventKind.PROGRESS, 52)
    # No percentage, no "Waiting to start", an attachment: nothing a rule recognises.
    assert parse_message(message(WAITING_ID, header(), attachments=[image])) is None
    waiting = parse_message(message(WAITING_ID, WAITING_CONTENT, attachments=[image]))
    assert waiting.kind is EventKind.STARTED


# --- parse_message: refusals -----------------------------------------------------------------

REFUSALS = [
    # (embed title, embed description, content, kind, error, error_details)
    pytest.param(
        "Banned prompt", PROMPT, header(), EventKind.MODERATED, "Banned prompt", f"Banned prompt\n{PROMPT}",
        id="banned-prompt",
    ),
    pytest.param(
        "Invalid prompt", "The prompt is too long.", header(), EventKind.FAILED,
        "Invalid prompt", "Invalid prompt\nThe prompt is too long.",
        id="invalid-prompt-is-failed",
    ),
    pytest.param(
        "Content Moderation", None, "", EventKind.MODERATED, "Content Moderation", "Content Moderation",
        id="moderation-title",
    ),
    pytest.param(
        "Prompt caught by FILTER", "try again", "", EventKind.MODERATED,
        "Prompt caught by FILTER", "Prompt caught by FILTER\ntry again",
        id="filter-title-case-insensitive",
    ),
    pytest.param(
        "Too many requests", "You have 2 jobs running.", header(), EventKind.OVERLOADED,
        "Too many requests", "Too many requests\nYou have 2 jobs running.",
        id="too-many-embed-title",
    ),
    pytest.param(
        "Busy", "The queue is full, please try later.", "", EventKind.OVERLOADED,
        "Busy", "Busy\nThe queue is full, please try later.",
        id="queue-full-embed-description",
    ),
    pytest.param(
        None, None, f"<@{USER}> Too many tasks in progress, wait for one to finish.", EventKind.OVERLOADED,
        "Too many tasks in progress, wait for one to finish.", "Too many tasks in progress, wait for one to finish.",
        id="too-many-content",
    ),
    pytest.param(
        None, None, f"<@{USER}> The generation queue is full\nPlease retry.", EventKind.OVERLOADED,
        "The generation queue is full", "The generation queue is full\nPlease retry.",
        id="queue-full-content",
    ),
    pytest.param(
        None, None, f"<@{USER}> Failed to generate the video. Credits refunded.", EventKind.FAILED,
        "Failed to generate the video. Credits refunded.", "Failed to generate the video. Credits refunded.",
        id="failed-content",
    ),
    pytest.param(
        None, None, "Failed: the prompt was blocked by our content filter", EventKind.MODERATED,
        "Failed: the prompt was blocked by our content filter", "Failed: the prompt was blocked by our content filter",
        id="failed-content-with-filter-wording",
    ),
    pytest.param(
        None, None, f"<@{USER}> Failed: too many jobs at once", EventKind.OVERLOADED,
        "Failed: too many jobs at once", "Failed: too many jobs at once",
        id="failed-but-load-wording-is-overloaded",
    ),
]


@pytest.mark.parametrize("title, description, content, kind, error, details", REFUSALS)
def test_refusals(title, description, content, kind, error, details):
    raw = embed_message(title, description, content=content) if title or description else message(WAITING_ID, content)
    parsed = parse_message(raw)
    assert parsed == PixverseEvent(
        kind=kind,
        message_id=WAITING_ID,
        content=content,
        prompt=extract_prompt(content),
        error=error,
        error_details=details,
        group=GROUP_CREATE if "(prompt:" in content else None,
    )


@pytest.mark.parametrize(
    "title",
    [
        "Pending mod message",
        "Account Blocked",
        "Subscription expired",
        "Please verify your account",
        "ACTION REQUIRED: accept the new terms",
    ],
)
def test_account_block_titles(title):
    parsed = parse_message(embed_message(title, "Open pixverse.ai to continue.", content=header()))
    assert parsed == PixverseEvent(
        kind=EventKind.ACCOUNT_BLOCKED,
        message_id=WAITING_ID,
        content=header(),
        prompt=PROMPT,
        error=title,
        error_details=f"{title}\nOpen pixverse.ai to continue.",
        group=GROUP_CREATE,
    )


def test_embeds_are_read_before_content_and_moderation_before_the_rest():
    # A moderation embed on a message that also carries videos and a percentage: moderation wins.
    raw = final_message()
    raw["content"] += " (100%)"
    raw["embeds"] = [{"title": "Banned prompt", "description": PROMPT}]
    assert parse_message(raw).kind is EventKind.MODERATED
    # A block embed with load wording in its description: the block wins.
    raw = embed_message("Blocked", "Too many reports on this account")
    assert (parse_message(raw).kind, parse_message(raw).error) == (EventKind.ACCOUNT_BLOCKED, "Blocked")
    # A load embed beats "Failed" content.
    raw = embed_message("Too many requests", content="Failed")
    assert parse_message(raw).kind is EventKind.OVERLOADED
    # A prompt repeated in a harmless embed does not make it a load refusal.
    raw = embed_message("Your prompt", "too many cats", content=header("too many cats"))
    assert parse_message(raw).kind is EventKind.STARTED


# --- parse_message: malformed and unrecognisable ---------------------------------------------


def without(raw: dict, key: str) -> dict:
    raw = copy.deepcopy(raw)
    del raw[key]
    return raw


def replaced(raw: dict, **values) -> dict:
    raw = copy.deepcopy(raw)
    raw.update(values)
    return raw


MALFORMED = [
    pytest.param(None, id="none"),
    pytest.param("not a message", id="string"),
    pytest.param([waiting_message()], id="list"),
    pytest.param({}, id="empty-dict"),
    pytest.param(without(waiting_message(), "author"), id="no-author"),
    pytest.param(replaced(waiting_message(), author="PixVerse"), id="author-not-a-dict"),
    pytest.param(replaced(waiting_message(), author={"username": "PixVerse"}), id="author-without-id"),
    pytest.param(without(waiting_message(), "id"), id="no-id"),
    pytest.param(replaced(waiting_message(), id=None), id="id-null"),
    pytest.param(replaced(waiting_message(), content=42), id="content-not-a-string"),
    pytest.param(replaced(final_message(), embeds={"title": "Banned prompt"}), id="embeds-not-a-list"),
    pytest.param(replaced(final_message(), attachments="pixverse_1.mp4"), id="attachments-not-a-list"),
    pytest.param(replaced(final_message(), components={"type": 1}), id="components-not-a-list"),
    pytest.param(message(WAITING_ID, "Hello! Use /create to make a video."), id="no-prompt-no-status"),
    pytest.param(message(WAITING_ID, ""), id="empty"),
    pytest.param(embed_message("PixVerse tips", "Use /create with a short prompt."), id="unknown-embed"),
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_or_unrecognisable_is_none(raw):
    assert parse_message(raw) is None


def test_sensible_reading_of_partly_bad_messages():
    raw = final_message()
    raw["id"] = int(RESULT_ID)  # ids as JSON numbers are read as their digits
    raw["flags"] = "lots"  # unreadable flags read as 0
    raw["message_reference"] = "nope"
    del raw["embeds"]  # missing lists are empty
    raw["attachments"] = [
        "junk",
        {"filename": "no-url.mp4", "content_type": "video/mp4"},  # nothing to download: skipped
        {"url": "https://cdn.example/a/b/generated.mp4?ex=9", "size": "big", "content_type": 7},
        {"url": "https://cdn.example/x", "proxy_url": "https://media.example/x", "filename": "x.png", "size": True},
    ]
    raw["components"] = [
        "junk",
        {"type": 1, "components": [{"type": 2, "label": "U1"}]},  # no custom_id
        {"type": 1, "components": [{"type": 2, "custom_id": "c-1"}]},  # neither label nor emoji
        {"type": 1, "components": [{"type": 2, "label": "  ", "emoji": {"name": "🔀"}, "custom_id": "c-2"}]},
        {"type": 1, "components": [{"type": 3, "custom_id": "menu"}, {"type": 2, "label": "V2", "custom_id": "c-3"}]},
    ]
    assert parse_message(raw) == PixverseEvent(
        kind=EventKind.COMPLETED,
        message_id=RESULT_ID,
        content=FINAL_CONTENT,
        prompt=PROMPT,
        attachments=(
            Attachment(url="https://cdn.example/a/b/generated.mp4?ex=9", filename="generated.mp4", size=None, content_type=None),
            Attachment(url="https://cdn.example/x", filename="x.png", size=None, content_type=None),
        ),
        buttons=(Button(label="🔀", custom_id="c-2"), Button(label="V2", custom_id="c-3")),
        group=GROUP_CREATE,
    )


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
def test_text_no_engine_stores_reads_as_the_replacement_character(bad):
    raw = replaced(embed_message(f"Banned{bad} prompt", f"a fox{bad}"), content=f"Failed{bad}")
    event = parse_message(raw)
    assert (event.kind, event.content, event.error, event.error_details) == (
        EventKind.MODERATED, "Failed\ufffd", "Banned\ufffd prompt", "Banned\ufffd prompt\na fox\ufffd")
    assert parse_message(replaced(waiting_message(), id=WAITING_ID + bad)) is None  # no id


def test_missing_or_null_content_reads_as_empty():
    raw = without(embed_message("Banned prompt", PROMPT), "content")
    assert parse_message(raw).content == ""
    raw = replaced(embed_message("Banned prompt", PROMPT), content=None)
    assert parse_message(raw).kind is EventKind.MODERATED


# --- extract_prompt --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param(WAITING_CONTENT, PROMPT, id="waiting"),
        pytest.param(FINAL_CONTENT, PROMPT, id="final"),
        pytest.param(header("  a   cat\n\non a\tsofa  "), "a cat on a sofa", id="whitespace-normalised"),
        pytest.param(
            header("Ünïcödé 猫 🐈 (with parens) and: colons"), "Ünïcödé 猫 🐈 (with parens) and: colons", id="unicode-parens"
        ),
        pytest.param(
            header("a cat style: Anime aspect-ratio: 1:1 drawn", style="3D Animation"),
            "a cat style: Anime aspect-ratio: 1:1 drawn",
            id="prompt-contains-known-style-field",
        ),
        pytest.param(
            header("in the style: Anime of old", style="Cyberpunk"), "in the style: Anime of old", id="unknown-style-last-label"
        ),
        pytest.param(header("watercolor style:dreamy"), "watercolor style:dreamy", id="style-label-without-space"),
        pytest.param(header("prompt: nested"), "prompt: nested", id="prompt-label-in-prompt"),
        pytest.param(header("x style: Anime", style="Anime"), "x style: Anime", id="same-style-twice"),
        pytest.param("(prompt: a cat style: Anime)", "a cat", id="no-aspect-ratio"),
        pytest.param("<@1> (prompt:  style: Anime aspect-ratio: 1:1)", None, id="empty-prompt"),
        pytest.param("<@1> (prompt: a cat)", None, id="no-style-label"),
        pytest.param("Hello there", None, id="no-prompt-label"),
        pytest.param("", None, id="empty-content"),
    ],
)
def test_extract_prompt(content, expected):
    assert extract_prompt(content) == expected


def test_extract_prompt_tolerates_non_strings():
    assert extract_prompt(None) is None  # type: ignore[arg-type]


# --- message_belongs_to_account --------------------------------------------------------------

OWNERSHIP = [
    pytest.param(waiting_message(), True, id="interaction-metadata-user"),
    pytest.param(final_message(), True, id="final-mentions-user"),
    pytest.param(message(RESULT_ID, f"<@!{USER}> (prompt: x style: Anime aspect-ratio: 1:1) done"), True, id="legacy-nick-mention"),
    pytest.param(
        message(WAITING_ID, "", interaction={"id": "1", "type": 2, "name": "create", "user": {"id": USER}}),
        True,
        id="deprecated-interaction-field",
    ),
    pytest.param(waiting_message(user=OTHER_USER), False, id="other-users-job"),
    pytest.param(final_message(user=OTHER_USER), False, id="other-users-result"),
    pytest.param(waiting_message(by=FOREIGN_BOT), False, id="foreign-bot-same-content"),
    pytest.param(final_message() | {"author": author(FOREIGN_BOT)}, False, id="foreign-bot-result"),
    pytest.param(message(RESULT_ID, f"<@{USER}0> (prompt: x style: Anime aspect-ratio: 1:1)"), False, id="longer-id-not-a-mention"),
    pytest.param(message(RESULT_ID, f"{header(f'a portrait of <@{USER}>', user=OTHER_USER)}"), False, id="mention-inside-prompt"),
    pytest.param(without(final_message(), "author"), False, id="no-author"),
    pytest.param(replaced(final_message(), content=None), False, id="content-null"),
    pytest.param(replaced(waiting_message(), interaction_metadata={"user": "x"}, content=5), False, id="garbage"),
    pytest.param("not a message", False, id="not-a-dict"),
]


@pytest.mark.parametrize("raw, expected", OWNERSHIP)
def test_message_belongs_to_account(raw, expected):
    assert message_belongs_to_account(raw, pixverse_user_id=PIXVERSE, account_user_id=USER) is expected


def test_ownership_accepts_ids_as_numbers():
    raw = waiting_message()
    raw["author"]["id"] = int(PIXVERSE)
    raw["interaction_metadata"]["user"]["id"] = int(USER)
    assert message_belongs_to_account(raw, pixverse_user_id=PIXVERSE, account_user_id=USER) is True


# --- match_job -------------------------------------------------------------------------------


def job(
    job_id: str,
    prompt: str | None = None,
    *,
    order: int,
    followup: bool = False,
    parent: str | None = None,
    message_id: str | None = None,
    group: str = GROUP_CREATE,
) -> JobCandidate:
    return JobCandidate(
        job_id=job_id,
        prompt=prompt,
        is_followup=followup,
        parent_message_id=parent,
        message_id=message_id,
        submitted_order=order,
        group=group,
    )


def ev(
    kind: EventKind = EventKind.STARTED,
    *,
    prompt: str | None = PROMPT,
    message_id: str = WAITING_ID,
    reference: str | None = None,
    group: str | None = GROUP_CREATE,
) -> PixverseEvent:
    return PixverseEvent(
        kind=kind, message_id=message_id, content="", prompt=prompt, reference_message_id=reference, group=group
    )


MATCHES = [
    pytest.param(ev(), [job("j1", PROMPT, order=1)], "j1", id="equal-prompt"),
    pytest.param(ev(), [], None, id="no-candidates"),
    pytest.param(ev(prompt="black cat"), [job("cat", "cat", order=1)], None, id="containment-is-not-equality"),
    pytest.param(ev(prompt="cat"), [job("black", "black cat", order=1)], None, id="containment-the-other-way"),
    pytest.param(
        ev(prompt="black cat"),
        [job("cat", "cat", order=1), job("black", "black cat", order=2)],
        "black",
        id="longer-prompt-to-its-own-job",
    ),
    pytest.param(ev(prompt="a cat on a sofa"), [job("j1", "  a cat\non   a sofa ", order=1)], "j1", id="whitespace-normalised"),
    pytest.param(ev(prompt="A cat"), [job("j1", "a cat", order=1)], None, id="case-sensitive"),
    pytest.param(
        ev(), [job("new", PROMPT, order=5), job("old", PROMPT, order=2)], "old", id="oldest-of-equal-prompts"
    ),
    pytest.param(
        ev(),
        [job("first", PROMPT, order=1, message_id="1300000000000000999"), job("second", PROMPT, order=2)],
        "second",
        id="second-waiting-goes-to-job-without-message",
    ),
    pytest.param(
        ev(EventKind.COMPLETED, message_id=RESULT_ID),
        [job("queued", PROMPT, order=1), job("running", PROMPT, order=2, message_id=WAITING_ID)],
        "running",
        id="completion-prefers-job-with-message",
    ),
    pytest.param(
        ev(EventKind.PROGRESS, prompt="something PixVerse rewrote"),
        [job("other", "something PixVerse rewrote", order=1), job("owner", PROMPT, order=2, message_id=WAITING_ID)],
        "owner",
        id="edit-matched-by-message-id-first",
    ),
    pytest.param(
        ev(EventKind.PROGRESS, prompt=None, message_id=FOLLOWUP_ID),
        [job("f1", order=1, followup=True, parent=RESULT_ID, message_id=FOLLOWUP_ID)],
        "f1",
        id="followup-edit-by-message-id",
    ),
    pytest.param(
        ev(message_id=FOLLOWUP_ID, reference=RESULT_ID),
        [
            job("create", PROMPT, order=1),
            job("f-other", order=2, followup=True, parent="1300000000000000777"),
            job("f-this", order=3, followup=True, parent=RESULT_ID),
        ],
        "f-this",
        id="followup-by-reference",
    ),
    pytest.param(
        ev(message_id=FOLLOWUP_ID, reference="1300000000000000555"),
        [
            job("create", PROMPT, order=1),
            job("f-new", order=4, followup=True, parent="1300000000000000777"),
            job("f-old", order=3, followup=True, parent="1300000000000000888"),
        ],
        "f-old",
        id="followup-fallback-oldest",
    ),
    pytest.param(
        ev(message_id=FOLLOWUP_ID, reference=RESULT_ID),
        [
            job("u1", order=1, followup=True, parent=RESULT_ID, message_id="1300000000000000004"),
            job("u2", order=2, followup=True, parent=RESULT_ID),
        ],
        "u2",
        id="two-buttons-on-one-result",
    ),
    pytest.param(
        ev(EventKind.COMPLETED, message_id=RESULT_ID, reference=WAITING_ID),
        [job("other", PROMPT, order=1), job("mine", "different", order=2, message_id=WAITING_ID)],
        "mine",
        id="reply-to-a-jobs-own-message",
    ),
    pytest.param(
        ev(message_id=FOLLOWUP_ID, reference="1300000000000000555"),
        [job("create", PROMPT, order=1)],
        "create",
        id="reply-without-followups-matched-by-prompt",
    ),
    pytest.param(
        ev(),
        [job("f1", PROMPT, order=1, followup=True, parent=RESULT_ID), job("c1", PROMPT, order=2)],
        "c1",
        id="no-reference-never-a-followup",
    ),
    pytest.param(ev(prompt=None), [job("j1", PROMPT, order=1), job("f1", order=2, followup=True)], None, id="no-prompt-no-reference"),
    pytest.param(ev(), [job("j1", None, order=1)], None, id="candidate-without-prompt"),
]


@pytest.mark.parametrize("event, candidates, expected", MATCHES)
def test_match_job(event, candidates, expected):
    assert match_job(event, candidates) == expected


def test_whole_job_through_parse_and_match():
    """Part 5's sequence for two accounts' look-alike jobs, as the dispatcher will run it."""
    jobs = [job("cat", "cat", order=1), job("black-cat", "black cat", order=2)]

    started = parse_message(waiting_message("black cat"))
    assert (started.kind, match_job(started, jobs)) == (EventKind.STARTED, "black-cat")
    jobs[1] = job("black-cat", "black cat", order=2, message_id=started.message_id)

    edit = parse_message(progress_edit(waiting_message("black cat"), 37))
    assert (edit.kind, edit.progress, match_job(edit, jobs)) == (EventKind.PROGRESS, 37, "black-cat")

    done = parse_message(final_message("black cat"))
    assert (done.kind, match_job(done, jobs)) == (EventKind.COMPLETED, "black-cat")
    assert [b.label for b in done.buttons] == BUTTON_LABELS

    # U1 pressed on the result: the answer replies to it.
    followups = [job("cat", "cat", order=1), job("u1", order=3, followup=True, parent=done.message_id)]
    reply = message(
        FOLLOWUP_ID,
        f"{header('black cat')} (Waiting to start)",
        type=19,
        message_reference={"message_id": done.message_id},
        interaction_metadata=interaction_metadata(kind=3),
    )
    answer = parse_message(reply)
    assert (answer.kind, answer.reference_message_id, match_job(answer, followups)) == (EventKind.STARTED, RESULT_ID, "u1")


# --- animate and meme_face: the other parameter groups ---------------------------------------

ANIMATE_PROMPT = "the cat turns its head"
MEME_PROMPT = "surprised cat face"


def animate_header(prompt: str = ANIMATE_PROMPT, *, motion: int = 5, user: str = USER) -> str:
    return f"<@{user}> (prompt: {prompt} motion: {motion})"


def meme_header(prompt: str = MEME_PROMPT, *, user: str = USER) -> str:
    return f"<@{user}> (prompt: {prompt})"


def replies(head: str, banned: str | None) -> dict[str, dict]:
    """A one-video job's messages under ``head``, as for create_single (part 4)."""
    waiting = message(WAITING_ID, f"{head} (Waiting to start)", type=20, interaction_metadata=interaction_metadata())
    return {
        "started": waiting,
        "progress": waiting | {"content": f"{head} (37%)", "edited_timestamp": "2025-01-01T00:00:05.000000+00:00"},
        "completed": message(
            RESULT_ID,
            f"{head} Author: <@{USER}>",
            attachments=[video(1)],
            components=[{"type": 1, "components": [button("U1"), button("ReDo")]}],
            mentions=[{"id": USER, "username": "account"}],
        ),
        "moderated": message(
            WAITING_ID,
            head,
            type=20,
            interaction_metadata=interaction_metadata(),
            embeds=[{"type": "rich", "title": "Banned prompt", "description": banned}],
        ),
    }


GROUP_CASES = [
    # (content head, group, the prompt PixVerse was given, the prompt read)
    pytest.param(animate_header(), GROUP_ANIMATE, ANIMATE_PROMPT, ANIMATE_PROMPT, id="animate"),
    pytest.param(animate_header("", motion=7), GROUP_ANIMATE, "", None, id="animate-empty-prompt"),
    pytest.param(
        animate_header("waves (hello) then (50%) done)"), GROUP_ANIMATE, "waves (hello) then (50%) done)", None,
        id="animate-parens-and-percentage",
    ),
    pytest.param(
        animate_header("slow motion: 3) then fast"), GROUP_ANIMATE, "slow motion: 3) then fast", None,
        id="animate-motion-field-in-prompt",
    ),
    pytest.param(
        animate_header("drawn in style: Anime) aspect-ratio: 1:1"), GROUP_ANIMATE, "drawn in style: Anime) aspect-ratio: 1:1", None,
        id="animate-create-fields-in-prompt",
    ),
    pytest.param(meme_header(), GROUP_MEME_FACE, MEME_PROMPT, MEME_PROMPT, id="meme-face"),
    pytest.param(meme_header("a clock (50%) says :)"), GROUP_MEME_FACE, "a clock (50%) says :)", None, id="meme-face-parens"),
    pytest.param(meme_header("cats (50%)"), GROUP_MEME_FACE, "cats (50%)", None, id="meme-face-ends-in-percentage"),
    pytest.param(
        meme_header("x) (Waiting to start) y"), GROUP_MEME_FACE, "x) (Waiting to start) y", None, id="meme-face-status-in-prompt"
    ),
]


@pytest.mark.parametrize("head, group, given, read", GROUP_CASES)
def test_other_groups_lifecycle(head, group, given, read):
    read = read if read is not None else (given or None)
    raw = replies(head, given or None)
    started, progress, completed, moderated = (parse_message(raw[k]) for k in ("started", "progress", "completed", "moderated"))
    assert (started.kind, started.group, started.prompt) == (EventKind.STARTED, group, read)
    assert (progress.kind, progress.progress, progress.group, progress.prompt) == (EventKind.PROGRESS, 37, group, read)
    assert (completed.kind, completed.group, completed.prompt) == (EventKind.COMPLETED, group, read)
    assert (completed.attachments, [b.label for b in completed.buttons]) == ((expected_video(1),), ["U1", "ReDo"])
    assert (moderated.kind, moderated.error, moderated.group, moderated.prompt) == (EventKind.MODERATED, "Banned prompt", group, read)
    # extract_prompt reads the same, asked for the group or for whichever the content shows.
    assert extract_prompt(raw["started"]["content"], group) == extract_prompt(raw["started"]["content"], None) == read
    assert message_belongs_to_account(raw["completed"], pixverse_user_id=PIXVERSE, account_user_id=USER) is True


def test_create_replies_read_as_create():
    assert REPLY_GROUPS == (GROUP_CREATE, GROUP_ANIMATE, GROUP_MEME_FACE) == ("create", "animate", "meme_face")
    for raw in (waiting_message(), progress_edit(waiting_message(), 37), final_message()):
        assert (parse_message(raw).group, parse_message(raw).prompt) == (GROUP_CREATE, PROMPT)
    # A create prompt may contain what closes the other groups.
    for prompt in ("slow motion: 3) go", "a cat) (Waiting to start"):
        assert (parse_message(waiting_message(prompt)).group, parse_message(waiting_message(prompt)).prompt) == (GROUP_CREATE, prompt)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(animate_header("too many cats, Failed (50%) queue is full Waiting to start"), id="animate"),
        pytest.param(meme_header("too many cats, Failed (50%) queue is full Waiting to start"), id="meme-face"),
    ],
)
def test_keywords_inside_other_groups_prompts_do_not_misfire(head):
    raw = replies(head, None)
    assert parse_message(raw["started"]).kind is EventKind.STARTED
    assert (parse_message(raw["progress"]).kind, parse_message(raw["progress"]).progress) == (EventKind.PROGRESS, 37)
    # Without "(Waiting to start)": the prompt's own words are not read either.
    bare = parse_message(message(WAITING_ID, head))
    assert (bare.kind, bare.prompt) == (EventKind.STARTED, "too many cats, Failed (50%) queue is full Waiting to start")


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(animate_header(f"a portrait of <@{USER}>", user=OTHER_USER), id="animate"),
        pytest.param(meme_header(f"a portrait of <@{USER}>", user=OTHER_USER), id="meme-face"),
    ],
)
def test_mention_inside_other_groups_prompts_is_not_ownership(head):
    raw = message(WAITING_ID, f"{head} (Waiting to start)")
    assert message_belongs_to_account(raw, pixverse_user_id=PIXVERSE, account_user_id=USER) is False
    assert message_belongs_to_account(raw, pixverse_user_id=PIXVERSE, account_user_id=OTHER_USER) is True


def test_known_limitation_prompt_ending_like_a_status_is_cut_short():
    # Documented in the module docstring: the first ")" followed by only a trailer closes the group.
    assert parse_message(replies(meme_header("x) (Waiting to start"), None)["started"]).prompt == "x"


@pytest.mark.parametrize(
    "content, group, expected",
    [
        pytest.param("<@1> (prompt: a cat)", None, "a cat", id="any-group-meme-face"),
        pytest.param("<@1> (prompt: a cat)", GROUP_MEME_FACE, "a cat", id="meme-face"),
        pytest.param("<@1> (prompt: a cat)", GROUP_ANIMATE, None, id="meme-face-read-as-animate"),
        pytest.param("<@1> (prompt: a cat motion: 5)", GROUP_ANIMATE, "a cat", id="animate"),
        pytest.param("<@1> (prompt: a cat motion:5 ) Author: <@1>", None, "a cat", id="animate-tight-spacing"),
        pytest.param("<@1> (prompt: motion: 5) (Waiting to start)", None, None, id="animate-empty-one-space"),
        pytest.param("<@1> (prompt: a cat motion: 5) (Queued)", None, "a cat", id="animate-unknown-trailer"),
        pytest.param(f"{header()} (Waiting to start)", None, PROMPT, id="any-group-create"),
        pytest.param(f"{header()} (Waiting to start)", GROUP_MEME_FACE, f"{PROMPT} style: {STYLE} aspect-ratio: {RATIO}", id="create-read-as-meme-face"),
        pytest.param("<@1> (prompt: a cat", None, None, id="unclosed"),
        pytest.param("<@1> (prompt: a cat)", "video", None, id="unknown-group"),
    ],
)
def test_extract_prompt_by_group(content, group, expected):
    assert extract_prompt(content, group) == expected


def aj(job_id: str, prompt: str | None, *, order: int, **fields) -> JobCandidate:
    return job(job_id, prompt, order=order, group=GROUP_ANIMATE, **fields)


def mj(job_id: str, prompt: str | None, *, order: int, **fields) -> JobCandidate:
    return job(job_id, prompt, order=order, group=GROUP_MEME_FACE, **fields)


GROUP_MATCHES = [
    pytest.param(
        ev(group=GROUP_ANIMATE), [job("c", PROMPT, order=1), aj("a", PROMPT, order=2), mj("m", PROMPT, order=3)], "a",
        id="animate-to-animate-job",
    ),
    pytest.param(
        ev(group=GROUP_MEME_FACE), [job("c", PROMPT, order=1), aj("a", PROMPT, order=2), mj("m", PROMPT, order=3)], "m",
        id="meme-face-to-meme-face-job",
    ),
    pytest.param(
        ev(), [aj("a", PROMPT, order=1), mj("m", PROMPT, order=2), job("c", PROMPT, order=3)], "c", id="create-to-create-job"
    ),
    pytest.param(ev(), [aj("a", PROMPT, order=1), mj("m", PROMPT, order=2)], None, id="create-never-to-other-groups"),
    pytest.param(
        ev(group=GROUP_ANIMATE, prompt=None),
        [job("c", None, order=1), aj("a-prompt", PROMPT, order=2), aj("a-empty", " ", order=3), aj("a-none", None, order=4)],
        "a-empty",
        id="empty-animate-to-oldest-animate-without-prompt",
    ),
    pytest.param(
        ev(group=GROUP_ANIMATE, prompt=None), [job("c", None, order=1), aj("a", PROMPT, order=2)], None,
        id="empty-animate-never-to-a-prompted-job",
    ),
    pytest.param(
        ev(group=GROUP_MEME_FACE, prompt=None), [mj("m", None, order=1)], None, id="empty-meme-face-matches-nothing"
    ),
    pytest.param(ev(prompt=None), [job("c", None, order=1)], None, id="empty-create-matches-nothing"),
    pytest.param(
        ev(group=None), [job("c", PROMPT, order=1), aj("a", PROMPT, order=2), mj("m", PROMPT, order=3)], None,
        id="no-group-matches-nothing-new",
    ),
    pytest.param(
        ev(EventKind.PROGRESS, group=None, prompt=None),
        [aj("a", PROMPT, order=1, message_id=WAITING_ID)],
        "a",
        id="no-group-still-by-message-id",
    ),
    pytest.param(
        ev(group=GROUP_ANIMATE, message_id=FOLLOWUP_ID, reference=RESULT_ID),
        [aj("a", PROMPT, order=1), job("u1", order=2, followup=True, parent=RESULT_ID)],
        "u1",
        id="followups-ignore-the-group",
    ),
]


@pytest.mark.parametrize("event, candidates, expected", GROUP_MATCHES)
def test_match_job_by_group(event, candidates, expected):
    assert match_job(event, candidates) == expected


def test_same_prompt_in_three_groups_each_get_their_own_messages():
    """A create, an animate and a meme_face job with one prompt, in one channel."""
    ids = {"create": ("1300000000000000011", "1300000000000000012"),
           "animate": ("1300000000000000021", "1300000000000000022"),
           "meme": ("1300000000000000031", "1300000000000000032")}
    heads = {"create": header(PROMPT), "animate": animate_header(PROMPT), "meme": meme_header(PROMPT)}
    jobs = {"create": job("create", PROMPT, order=1), "animate": aj("animate", PROMPT, order=2), "meme": mj("meme", PROMPT, order=3)}

    # The first replies arrive in the reverse order of submission.
    for name in ("meme", "animate", "create"):
        started = parse_message(message(ids[name][0], f"{heads[name]} (Waiting to start)", interaction_metadata=interaction_metadata()))
        assert (started.kind, match_job(started, list(jobs.values()))) == (EventKind.STARTED, name)
        jobs[name] = JobCandidate(**{**jobs[name].__dict__, "message_id": started.message_id})

    for name in ("create", "meme", "animate"):
        edit = parse_message(message(ids[name][0], f"{heads[name]} (50%)"))
        assert (edit.kind, match_job(edit, list(jobs.values()))) == (EventKind.PROGRESS, name)
        done = parse_message(message(ids[name][1], f"{heads[name]} Author: <@{USER}>", attachments=[video(1)]))
        assert (done.kind, done.prompt, match_job(done, list(jobs.values()))) == (EventKind.COMPLETED, PROMPT, name)
