"""Guild channel messages: storage, gateway delivery by intents, the bot's reads and writes.

Messages posted in guild channels (by the fake PixVerse or by the bot through
``POST /channels/{id}/messages``) live in ``channel_messages`` and reach the bot as
MESSAGE_CREATE / MESSAGE_UPDATE (``_emit_message_create`` / ``_edit_channel_message``),
filtered by the intents it identified with (GUILD_MESSAGES to get them at all,
MESSAGE_CONTENT for content/embeds/attachments/components). The bot reads them with
Discord's paging and edits its own with ``PATCH /channels/{id}/messages/{id}``.

Every message body the bot sends (here and in ``interactions``) is checked against
Discord's limits (:func:`_message_limit_errors`), gets its ``mentions`` from content +
``allowed_mentions`` (``_mention_fields``) and, once written, a version in
:meth:`MessagesMixin.message_versions`. ``message_rate_limit`` turns on Discord's
per-channel 429 for channel posts / edits and webhook message edits (``_rate_limit``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from typing import Any, Callable, Sequence

from aiohttp import web

from tests.e2e.fake.gateway import _GatewaySession
from tests.e2e.fake.payloads import (
    _RECORD,
    FLAG_IS_COMPONENTS_V2,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    RecordedFile,
    _error,
    _form_errors,
    _invalid_form,
    _iso,
    _json,
    _message_body,
    _without_guild,
)

_USER_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")

# Discord's limits on a message body (checked by _message_limit_errors).
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TITLE = 256
MAX_EMBED_DESCRIPTION = 4096
MAX_EMBED_FIELDS = 25
MAX_EMBED_FIELD_NAME = 256
MAX_EMBED_FIELD_VALUE = 1024
MAX_EMBED_FOOTER = 2048
MAX_EMBED_AUTHOR = 256
MAX_EMBEDS_TOTAL = 6000  # all embeds of one message together
MAX_ACTION_ROWS = 5
MAX_ROW_COMPONENTS = 5
MAX_BUTTON_LABEL = 80
MAX_CUSTOM_ID = 100
COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2
BUTTON_STYLE_LINK = 5
BUTTON_STYLE_PREMIUM = 6


def _add_error(errors: dict, path: Sequence[Any], code: str, message: str) -> None:
    node = errors
    for key in path:
        node = node.setdefault(str(key), {})
    node.setdefault("_errors", []).append({"code": code, "message": message})


def _message_limit_errors(body: dict) -> dict:
    """Discord's limits on a message body, as the nested ``errors`` of a 50035 (empty: acceptable).

    Checks only what the body carries (an edit without ``embeds`` keeps its embeds): content
    length; the number of embeds, each embed's title / description / fields / footer /
    author and their total size; action rows, buttons, labels and custom_ids (unique within
    the message); link buttons (style 5) with a url and no custom_id, others the reverse; a
    label or an emoji on every button. Components v2 bodies (flag 1 << 15) skip the
    component checks. Codes and messages are Discord's where known.
    """
    errors: dict = {}

    def too_long(path: Sequence[Any], value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            _add_error(errors, path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def required_text(path: Sequence[Any], value: Any, limit: int) -> None:
        if not isinstance(value, str) or not value:
            _add_error(errors, path, "BASE_TYPE_REQUIRED", "This field is required")
        else:
            too_long(path, value, limit)

    def text(value: Any) -> int:
        return len(value) if isinstance(value, str) else 0

    too_long(["content"], body.get("content"), MAX_CONTENT)

    embeds = body.get("embeds")
    if isinstance(embeds, list):
        if len(embeds) > MAX_EMBEDS:
            _add_error(errors, ["embeds"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
        total = 0
        for i, embed in enumerate(embeds):
            if not isinstance(embed, dict):
                continue
            where = ["embeds", i]
            too_long([*where, "title"], embed.get("title"), MAX_EMBED_TITLE)
            too_long([*where, "description"], embed.get("description"), MAX_EMBED_DESCRIPTION)
            total += text(embed.get("title")) + text(embed.get("description"))
            fields = embed.get("fields")
            if isinstance(fields, list):
                if len(fields) > MAX_EMBED_FIELDS:
                    _add_error(errors, [*where, "fields"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_FIELDS} or fewer in length.")
                for j, f in enumerate(fields):
                    f = f if isinstance(f, dict) else {}
                    required_text([*where, "fields", j, "name"], f.get("name"), MAX_EMBED_FIELD_NAME)
                    required_text([*where, "fields", j, "value"], f.get("value"), MAX_EMBED_FIELD_VALUE)
                    total += text(f.get("name")) + text(f.get("value"))
            footer = embed.get("footer")
            if isinstance(footer, dict):
                too_long([*where, "footer", "text"], footer.get("text"), MAX_EMBED_FOOTER)
                total += text(footer.get("text"))
            author = embed.get("author")
            if isinstance(author, dict):
                too_long([*where, "author", "name"], author.get("name"), MAX_EMBED_AUTHOR)
                total += text(author.get("name"))
        if total > MAX_EMBEDS_TOTAL:
            _add_error(errors, ["embeds"], "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBEDS_TOTAL}")

    rows = body.get("components")
    if isinstance(rows, list) and not (body.get("flags") or 0) & FLAG_IS_COMPONENTS_V2:
        if len(rows) > MAX_ACTION_ROWS:
            _add_error(errors, ["components"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length.")
        seen: set[str] = set()
        for i, row in enumerate(rows):
            row = row if isinstance(row, dict) else {}
            if row.get("type") != COMPONENT_ACTION_ROW:
                _add_error(errors, ["components", i, "type"], "UNION_TYPE_CHOICES",
                           f'Value of field "type" must be one of ({COMPONENT_ACTION_ROW},).')
                continue
            children = row.get("components")
            if not isinstance(children, list) or not 1 <= len(children) <= MAX_ROW_COMPONENTS:
                _add_error(errors, ["components", i, "components"], "BASE_TYPE_BAD_LENGTH",
                           f"Must be between 1 and {MAX_ROW_COMPONENTS} in length.")
            for j, c in enumerate(children if isinstance(children, list) else []):
                c = c if isinstance(c, dict) else {}
                where = ["components", i, "components", j]
                custom_id = c.get("custom_id")
                if isinstance(custom_id, str):
                    too_long([*where, "custom_id"], custom_id, MAX_CUSTOM_ID)
                    if custom_id in seen:
                        _add_error(errors, [*where, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED",
                                   "Component custom id cannot be duplicated")
                    seen.add(custom_id)
                if c.get("type") != COMPONENT_BUTTON:
                    continue
                too_long([*where, "label"], c.get("label"), MAX_BUTTON_LABEL)
                style = c.get("style")
                if style == BUTTON_STYLE_PREMIUM:
                    continue
                if style == BUTTON_STYLE_LINK:
                    if not c.get("url"):
                        _add_error(errors, [*where, "url"], "BUTTON_COMPONENT_URL_REQUIRED", "A url is required for a link button")
                    if custom_id is not None:
                        _add_error(errors, [*where, "custom_id"], "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID",
                                   "A link button cannot have a custom id")
                else:
                    if not custom_id:
                        _add_error(errors, [*where, "custom_id"], "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
                                   "A custom id is required")
                    if c.get("url") is not None:
                        _add_error(errors, [*where, "url"], "BUTTON_COMPONENT_NON_LINK_HAS_URL",
                                   "Only a link button can have a url")
                if not c.get("label") and not c.get("emoji"):
                    _add_error(errors, where, "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A button needs a label or an emoji")
    return errors


class MessagesMixin:
    """Channel messages, the MESSAGE_* events sent, the bot's message versions and the rate limit."""

    def _init_messages(self) -> None:
        # --- channel messages (the fake PixVerse's posts and the bot's own) -------------
        self.channel_messages: dict[int, list[dict]] = {}  # channel_id -> message objects, oldest first
        # Every MESSAGE_CREATE / MESSAGE_UPDATE the fake emitted, as (event name, snapshot of the message).
        self.message_events: list[tuple[str, dict]] = []
        # Every successful create / edit of a message by the bot, per message id (see message_versions).
        self._message_versions: dict[str, list[dict]] = {}
        # Per-channel rate limit on the bot's message writes: (count, per seconds), a fixed window
        # per channel; None (default) is unlimited. See _rate_limit.
        self.message_rate_limit: tuple[int, float] | None = None
        self.rate_limited: list[tuple[str, str, float]] = []  # (channel_id, path, time.monotonic()) of every 429
        self._rate_windows: dict[str, list[float]] = {}  # channel_id -> [window start, writes counted]

    # ---------------------------------------------------------------- channel messages

    def public_user_payload(self, user_id: int) -> dict:
        """A user as it appears inside messages (author, mentions): public fields only."""
        if self.pixverse_application_id is not None and user_id == self.pixverse_application_id:
            return self.pixverse_user_payload()
        if user_id == self.decoy_application_id:
            return self._decoy_user_payload()
        u = self.user_payload(user_id)
        keys = ("id", "username", "discriminator", "global_name", "avatar", "public_flags", "bot")
        return {k: u[k] for k in keys if k in u}

    def channel_message_object(
        self,
        *,
        channel_id: int,
        author: dict,
        content: str = "",
        type: int = MESSAGE_DEFAULT,
        embeds: list[dict] | None = None,
        attachments: list[dict] | None = None,
        components: list[dict] | None = None,
        mentions: Sequence[int] = (),
        mention_roles: Sequence[int] = (),
        mention_everyone: bool = False,
        flags: int = 0,
        reference: dict | None = None,
    ) -> dict:
        """A full Discord message object in ``channel_id`` (not stored; see ``_emit_message_create``).

        ``reference`` is the message replied to: it becomes ``message_reference`` plus
        ``referenced_message`` (a snapshot, one level deep, like Discord sends it).
        """
        guild, _ = self._find_channel(channel_id)
        msg: dict[str, Any] = {
            "id": self.snowflake(),
            "type": type,
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": [self.public_user_payload(u) for u in mentions],
            "mention_roles": [str(r) for r in mention_roles],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "pinned": False,
            "flags": flags,
        }
        if guild is not None:
            msg["guild_id"] = str(guild["id"])
        if reference is not None:
            ref = {"type": 0, "message_id": reference["id"], "channel_id": reference["channel_id"]}
            if "guild_id" in reference:
                ref["guild_id"] = reference["guild_id"]
            msg["message_reference"] = ref
            msg["referenced_message"] = {k: copy.deepcopy(v) for k, v in reference.items() if k != "referenced_message"}
        return msg

    def find_channel_message(self, channel_id: int, message_id: int | str) -> dict | None:
        for msg in self.channel_messages.get(int(channel_id), []):
            if msg["id"] == str(message_id):
                return msg
        return None

    async def wait_for_channel_message(
        self, channel_id: int, predicate: Callable[[dict], bool] | None = None, *, timeout: float = 10
    ) -> dict:
        """Wait until a message in ``channel_id`` satisfies ``predicate`` (default: any) and return the first such."""

        def find() -> dict | None:
            return next((m for m in self.channel_messages.get(channel_id, []) if predicate is None or predicate(m)), None)

        try:
            await self._wait_until(lambda: find() is not None, timeout)
        except TimeoutError:
            contents = [m["content"] for m in self.channel_messages.get(channel_id, [])]
            raise AssertionError(f"no matching message in channel {channel_id} within {timeout}s (messages: {contents})") from None
        found = find()
        assert found is not None
        return found

    async def _emit_message_create(self, msg: dict) -> None:
        """Store a new message in its channel and send MESSAGE_CREATE to every bot session."""
        channel_id = int(msg["channel_id"])
        self.channel_messages.setdefault(channel_id, []).append(msg)
        _, channel = self._find_channel(channel_id)
        if channel is not None:
            channel["last_message_id"] = msg["id"]
        await self._emit_message_event("MESSAGE_CREATE", msg)

    async def _edit_channel_message(self, msg: dict, **changes: Any) -> None:
        """Edit a stored message in place and send MESSAGE_UPDATE (the full message, like Discord)."""
        msg.update(changes)
        msg["edited_timestamp"] = _iso()
        await self._emit_message_event("MESSAGE_UPDATE", msg)

    async def _emit_message_event(self, t: str, msg: dict) -> None:
        self.message_events.append((t, copy.deepcopy(msg)))
        for session in list(self._sessions.values()):
            if not self._serves(session, msg.get("guild_id")):
                continue
            d = self._message_event_for(session, msg)
            if d is not None:
                with contextlib.suppress(ConnectionError):
                    await self._dispatch(session, t, d)
        await self._notify()

    def _message_event_for(self, session: _GatewaySession, msg: dict) -> dict | None:
        """The event ``d`` this session gets, as its intents allow (None: not delivered).

        Guild messages need GUILD_MESSAGES; without MESSAGE_CONTENT, content, embeds,
        attachments and components arrive empty unless the bot wrote the message or is
        mentioned in it (Discord's rules for the privileged intent).
        """
        intents = session.identify.get("intents")
        d = copy.deepcopy(msg)
        if "guild_id" not in d:
            return d
        if intents is not None and not intents & INTENT_GUILD_MESSAGES:
            return None
        if "webhook_id" not in d:
            # Guild message events carry the author's member (without its user).
            d["member"] = {
                "roles": [],
                "joined_at": _iso(),
                "premium_since": None,
                "nick": None,
                "avatar": None,
                "banner": None,
                "deaf": False,
                "mute": False,
                "pending": False,
                "flags": 0,
                "communication_disabled_until": None,
            }
        if intents is not None and not intents & INTENT_MESSAGE_CONTENT:
            me = str(self.bot_user_id)
            if d["author"]["id"] != me and not any(m.get("id") == me for m in d.get("mentions", [])):
                d.update(content="", embeds=[], attachments=[], components=[])
                d.pop("poll", None)
        return d

    @staticmethod
    def _mentions_for(content: str, allowed: dict | None) -> tuple[list[int], list[int], bool]:
        """Users, roles and @everyone a message's ``mentions*`` fields list, given its allowed_mentions."""
        users = [int(u) for u in dict.fromkeys(_USER_MENTION_RE.findall(content))]
        roles = [int(r) for r in dict.fromkeys(_ROLE_MENTION_RE.findall(content))]
        everyone = "@everyone" in content or "@here" in content
        if isinstance(allowed, dict):
            parse = allowed.get("parse") or []
            if "users" not in parse:
                ok = {int(u) for u in allowed.get("users") or []}
                users = [u for u in users if u in ok]
            if "roles" not in parse:
                ok = {int(r) for r in allowed.get("roles") or []}
                roles = [r for r in roles if r in ok]
            everyone = everyone and "everyone" in parse
        return users, roles, everyone

    def _attachments(self, body: dict, files: list[RecordedFile]) -> list[dict]:
        out = []
        for index, f in enumerate(files):
            att_id = self.snowflake()
            out.append(
                {
                    "id": att_id,
                    "filename": f.filename or f"file{index}",
                    "size": len(f.data),
                    "url": f"{self.base_url}/attachments/{att_id}/{f.filename}",
                    "proxy_url": f"{self.base_url}/attachments/{att_id}/{f.filename}",
                    "content_type": f.content_type,
                }
            )
        return out

    # ---------------------------------------------------------------- REST: channel messages (bot token)

    async def _h_get_channel_messages(self, request: web.Request) -> web.Response:
        """History with Discord's paging: newest first; ``after`` gives the ``limit`` oldest after it."""
        raw_id = request.match_info["channel_id"]
        if not raw_id.isdigit() or self.channel_payload(int(raw_id)) is None:
            return _error(404, "Unknown Channel", 10003)
        q = request.query
        problems: list[str] = []
        limit = 50
        if q.get("limit", "") != "":
            try:
                limit = int(q["limit"])
            except ValueError:
                problems.append(f"limit: Value \"{q['limit']}\" is not int.")
            else:
                if not 1 <= limit <= 100:
                    problems.append("limit: int value should be between 1 and 100.")
        anchors: dict[str, int] = {}
        for key in ("around", "before", "after"):
            if q.get(key, "") != "":
                if q[key].isdigit():
                    anchors[key] = int(q[key])
                else:
                    problems.append(f"{key}: Value \"{q[key]}\" is not snowflake.")
        if problems:
            return _invalid_form(problems)
        messages = sorted(self.channel_messages.get(int(raw_id), []), key=lambda m: int(m["id"]))
        if "around" in anchors:
            older = [m for m in messages if int(m["id"]) < anchors["around"]]
            newer = [m for m in messages if int(m["id"]) >= anchors["around"]]
            take_older = min(len(older), limit // 2)
            page = newer[: limit - take_older]
            page = older[len(older) - min(len(older), limit - len(page)) :] + page
        else:
            page = [
                m
                for m in messages
                if ("after" not in anchors or int(m["id"]) > anchors["after"])
                and ("before" not in anchors or int(m["id"]) < anchors["before"])
            ]
            page = page[:limit] if "after" in anchors else page[-limit:]
        # Like Discord: messages read over REST carry no guild_id (only gateway events do).
        return _json([_without_guild(m) for m in reversed(page)])

    async def _h_get_channel_message(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["channel_id"]
        if not raw_id.isdigit() or self.channel_payload(int(raw_id)) is None:
            return _error(404, "Unknown Channel", 10003)
        msg = self.find_channel_message(int(raw_id), request.match_info["message_id"])
        if msg is None:
            return _error(404, "Unknown Message", 10008)
        return _json(msg)

    async def _h_post_channel_message(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["channel_id"]
        if (limited := self._rate_limit(request, raw_id)) is not None:
            return limited
        if not raw_id.isdigit() or self.channel_payload(int(raw_id)) is None:
            return _error(404, "Unknown Channel", 10003)
        channel_id = int(raw_id)
        body = _message_body(request)
        if isinstance(body, web.Response):
            return body
        files = request[_RECORD].files
        content = body.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            return _invalid_form(["content: must be a string"])
        if errors := _message_limit_errors(body):
            return _form_errors(errors)
        embeds = list(body.get("embeds") or ([body["embed"]] if body.get("embed") else []))
        components = body.get("components") or []
        if not (content or embeds or files or components or body.get("sticker_ids") or body.get("poll")):
            return _error(400, "Cannot send an empty message", 50006)
        referenced = None
        ref = body.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id") is not None:
            ref_channel = int(ref.get("channel_id") or channel_id)
            referenced = self.find_channel_message(ref_channel, ref["message_id"])
            if referenced is None and ref.get("fail_if_not_exists", True):
                return _invalid_form(["message_reference: Unknown message"])
        allowed = body.get("allowed_mentions")
        users, roles, everyone = self._mentions_for(content, allowed)
        msg = self.channel_message_object(
            channel_id=channel_id,
            author=self.public_user_payload(self.bot_user_id),
            content=content,
            type=MESSAGE_REPLY if referenced is not None else MESSAGE_DEFAULT,
            embeds=embeds,
            attachments=self._attachments(body, files),
            components=components,
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            flags=(body.get("flags") or 0) & (FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS),
            reference=referenced,
        )
        msg["tts"] = bool(body.get("tts", False))
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        if allowed is not None:
            msg["allowed_mentions"] = allowed
        if body.get("poll"):
            msg["poll"] = body["poll"]
        await self._emit_message_create(msg)
        self._record_version(msg["id"], "channel_post", body, msg)
        return _json(msg)

    async def _h_edit_channel_message(self, request: web.Request) -> web.Response:
        """PATCH /channels/{C}/messages/{M}: the bot edits one of its own messages (MESSAGE_UPDATE follows).

        Like Discord: ``content`` / ``embeds`` / ``components`` replace what the message has
        (``null`` clears), ``attachments`` lists the attachments to keep (by id) and new files
        are added, ``flags`` can only toggle SUPPRESS_EMBEDS, and a new ``content`` gets its
        mentions rebuilt with this request's ``allowed_mentions`` (default: parse all).
        """
        raw_id = request.match_info["channel_id"]
        if (limited := self._rate_limit(request, raw_id)) is not None:
            return limited
        if not raw_id.isdigit() or self.channel_payload(int(raw_id)) is None:
            return _error(404, "Unknown Channel", 10003)
        msg = self.find_channel_message(int(raw_id), request.match_info["message_id"])
        if msg is None:
            return _error(404, "Unknown Message", 10008)
        if msg["author"].get("id") != str(self.bot_user_id):
            return _error(403, "Cannot edit a message authored by another user", 50005)
        body = _message_body(request)
        if isinstance(body, web.Response):
            return body
        files = request[_RECORD].files
        if body.get("content") is not None and not isinstance(body["content"], str):
            return _invalid_form(["content: must be a string"])
        if errors := _message_limit_errors(body):
            return _form_errors(errors)
        changes: dict[str, Any] = {}
        for key in ("content", "embeds", "components"):
            if key in body:
                changes[key] = body[key] if body[key] is not None else ("" if key == "content" else [])
        if "attachments" in body or files:
            keep = {str(a.get("id")) for a in body.get("attachments") or [] if isinstance(a, dict)}
            kept = [a for a in msg["attachments"] if a["id"] in keep]
            changes["attachments"] = kept + self._attachments(body, files)
        if body.get("flags") is not None:
            changes["flags"] = (msg["flags"] & ~FLAG_SUPPRESS_EMBEDS) | (body["flags"] & FLAG_SUPPRESS_EMBEDS)
        if "content" in body:
            allowed = body.get("allowed_mentions")
            changes.update(self._mention_fields(changes["content"], allowed))
            if allowed is not None:
                changes["allowed_mentions"] = allowed
            else:
                msg.pop("allowed_mentions", None)
        await self._edit_channel_message(msg, **changes)
        self._record_version(msg["id"], "channel_edit", body, msg)
        return _json(msg)

    # ---------------------------------------------------------------- message writes: versions, mentions, rate limit

    def message_versions(self, message_id: str | int) -> list[dict]:
        """Every successful create / edit of a message by the bot, oldest first.

        Each entry is ``{"at": time.monotonic(), "route": "callback" | "followup" |
        "webhook_edit" | "channel_post" | "channel_edit", "body": <the message body sent>,
        "message": <copy of the message object after that write>}``. For an interaction
        callback ``body`` is the callback's ``data`` (a type-5 defer creates the "thinking"
        message with its ``data``, often ``{"flags": 64}`` or ``None``).
        """
        return copy.deepcopy(self._message_versions.get(str(message_id), []))

    def notified(self, user_id: int | str) -> list[str]:
        """The bot's messages whose writing notified this user, oldest first. Discord notifies the
        users a message mentions when it is created (a callback's message, a followup, a channel
        post; not a deferred "thinking…", which has no content) and never for an edit, whatever
        mentions the edit adds (discord-api-docs #1419, #5497)."""
        told = []
        for message_id, versions in self._message_versions.items():
            first = versions[0]
            if first["route"] in ("callback", "followup", "channel_post") and any(
                    m.get("id") == str(user_id) for m in first["message"].get("mentions", [])):
                told.append((first["at"], message_id))
        return [message_id for _, message_id in sorted(told)]

    def _record_version(self, message_id: str, route: str, body: Any, msg: dict) -> None:
        self._message_versions.setdefault(str(message_id), []).append(
            {"at": time.monotonic(), "route": route, "body": copy.deepcopy(body), "message": copy.deepcopy(msg)}
        )

    def _mention_fields(self, content: str, allowed: dict | None) -> dict:
        """``mentions`` / ``mention_roles`` / ``mention_everyone`` of a message written with this content."""
        users, roles, everyone = self._mentions_for(content, allowed)
        return {
            "mention_everyone": everyone,
            "mentions": [self.public_user_payload(u) for u in users],
            "mention_roles": [str(r) for r in roles],
        }

    def _rate_limit(self, request: web.Request, channel_id: str) -> web.Response | None:
        """Count one message write in ``channel_id``; Discord's 429 once ``message_rate_limit`` is used up.

        A fixed window per channel, like Discord's per-channel buckets: the first write opens a
        window of ``per`` seconds in which ``count`` writes go through (whatever their answer:
        Discord counts 4xx too); later ones get a 429 with ``retry_after`` = the time until the
        window ends (rounded up to the millisecond, so a client that waits exactly that long
        lands in the next window). The 429 does not count. Successful writes carry no
        ``X-RateLimit-*`` headers, so discord.py keeps its default of one request at a time
        per route.

        discord.py 2.7 retries such a 429 after ``retry_after`` on both paths the bot writes
        messages through (checked in its source):

        * bot HTTP client, ``discord/http.py`` ``HTTPClient.request`` (lines 711-763): a 429
          without a ``Via`` header (or with a non-JSON body) raises ``HTTPException``
          ("banned by Cloudflare"); otherwise it reads ``data['retry_after']``, raises
          ``RateLimited`` only if ``max_ratelimit_timeout`` is set and exceeded (unset by
          default), stops every request if ``global`` is true, ``asyncio.sleep(retry_after)``
          and retries, at most 5 tries in all (line 646). The 429's ``X-Ratelimit-*`` headers
          are not applied to the bucket (``if response.status != 429``, line 697).
        * webhook adapter (interaction callbacks / followups / ``@original`` and
          ``Webhook.edit_message``), ``discord/webhook/async_.py``
          ``AsyncWebhookAdapter.request`` (lines 207-215): 429 without ``Via`` raises
          ``HTTPException``; otherwise ``asyncio.sleep(data['retry_after'])`` and retry, at
          most 5 attempts (line 171). ``X-Ratelimit-Remaining: 0`` on a non-429 would delay
          the next request by ``X-Ratelimit-Reset-After`` (line 195), which is why successful
          writes here carry no such headers.
        """
        if self.message_rate_limit is None:
            return None
        limit, per = self.message_rate_limit
        now = time.monotonic()
        window = self._rate_windows.get(channel_id)
        if window is None or now >= window[0] + per:
            window = self._rate_windows[channel_id] = [now, 0]
        if window[1] < limit:
            window[1] += 1
            return None
        retry_after = math.ceil((window[0] + per - now) * 1000) / 1000
        self.rate_limited.append((channel_id, request[_RECORD].path, now))
        response = _json({"message": "You are being rate limited.", "retry_after": retry_after, "global": False, "code": 0}, 429)
        response.headers.update(
            {
                "Retry-After": str(math.ceil(retry_after)),
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Scope": "user",
                # Without Via discord.py takes a 429 for a Cloudflare ban and gives up.
                "Via": "1.1 google",
            }
        )
        return response
