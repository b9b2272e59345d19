"""Wire constants, answer helpers and the records tests read (no state, no aiohttp app).

Everything here is shared by the concern modules of :mod:`tests.e2e.fake`: Discord's
constants (message flags, gateway opcodes, interaction / callback / option / message types,
intents, default permissions), the JSON answer helpers (:func:`_json` sends Content-Type
exactly ``application/json``, see the package docstring), the per-request record key
``_RECORD``, and the dataclasses tests get back (:class:`RecordedRequest`,
:class:`RecordedFile`, :class:`MemberFile`, :class:`InteractionResult`).
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000

# Message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15

# Gateway opcodes
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

# Interaction types
INTERACTION_PING = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

# Interaction callback types
CALLBACK_PONG = 1
CALLBACK_CHANNEL_MESSAGE = 4
CALLBACK_DEFERRED_CHANNEL_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE_MESSAGE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE_RESULT = 8
CALLBACK_MODAL = 9

# Application command option types
OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_ATTACHMENT = 11

# Message types
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20

# Gateway intents that decide which message events (and which of their fields) a bot gets.
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15

# Permission bits used for the default @everyone role / the bot's app_permissions.
_P = {
    "CREATE_INSTANT_INVITE": 1 << 0,
    "ADD_REACTIONS": 1 << 6,
    "VIEW_CHANNEL": 1 << 10,
    "SEND_MESSAGES": 1 << 11,
    "EMBED_LINKS": 1 << 14,
    "ATTACH_FILES": 1 << 15,
    "READ_MESSAGE_HISTORY": 1 << 16,
    "USE_EXTERNAL_EMOJIS": 1 << 18,
    "CONNECT": 1 << 20,
    "SPEAK": 1 << 21,
    "CHANGE_NICKNAME": 1 << 26,
    "USE_APPLICATION_COMMANDS": 1 << 31,
    "SEND_MESSAGES_IN_THREADS": 1 << 38,
}
DEFAULT_EVERYONE_PERMISSIONS = sum(_P.values())


# Per-request storage filled by the recording middleware (typed keys on aiohttp >= 3.12,
# which warns about plain string keys).
if hasattr(web, "RequestKey"):
    _RECORD: Any = web.RequestKey("fake_discord_record", object)
else:  # pragma: no cover - older aiohttp
    _RECORD = "fake_discord_record"


_MALFORMED: Any = object()  # sentinel: the request body was not valid JSON


def _json(data: Any, status: int = 200) -> web.Response:
    """JSON answer with Content-Type exactly ``application/json`` (see module docstring)."""
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _error(status: int, message: str, code: int = 0, errors: dict | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return _json(body, status)


def _without_guild(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "guild_id"}


def _unauthorized() -> web.Response:
    return _error(401, "401: Unauthorized")


def _invalid_form(problems: list[str]) -> web.Response:
    """Discord's 400 for a body it cannot accept (the reasons listed under errors._errors)."""
    return _error(400, "Invalid Form Body", 50035, {"_errors": [{"code": "INVALID_FORM_BODY", "message": p} for p in problems]})


def _form_errors(errors: dict) -> web.Response:
    """Discord's 400 50035 with a nested ``errors`` object (``{"content": {"_errors": [...]}}``)."""
    return _error(400, "Invalid Form Body", 50035, errors)


def text_channel(channel_id: int, guild_id: int, *, name: str, position: int = 0) -> dict:
    """A guild text channel as Discord sends it (REST and GUILD_CREATE), with no overwrites."""
    return {
        "id": str(channel_id),
        "type": 0,  # GUILD_TEXT
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "permission_overwrites": [],
        "flags": 0,
    }


def _message_body(request: web.Request) -> dict | web.Response:
    """A message create/edit body: its JSON object (``{}`` for files alone), or Discord's 400."""
    body = request[_RECORD].json
    if body is None and request[_RECORD].files:
        body = {}
    if not isinstance(body, dict):
        return _invalid_form(["body: must be a JSON object"])
    return body


def _iso(ts: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(ts if ts is not None else time.time(), datetime.timezone.utc).isoformat()


# ---------------------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------------------


@dataclass
class RecordedFile:
    field: str  # multipart field name, e.g. "files[0]"
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class MemberFile:
    """A file a member attaches to a type-11 option of the bot's own slash command.

    Pass it as the option's value to :meth:`FakeDiscord.make_interaction` / ``invoke``: the
    interaction then carries the attachment id as the value and the attachment under
    ``data.resolved.attachments``, served with exactly ``data`` by the fake CDN.
    ``content_type=None`` leaves ``content_type`` out of the attachment object.
    """

    filename: str
    data: bytes
    content_type: str | None = "image/png"


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the /api/v10 prefix, e.g. "/users/@me"
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # parsed JSON body (for multipart: the payload_json part), else None
    files: list[RecordedFile] = field(default_factory=list)
    status: int | None = None  # status the fake answered with
    at: float = field(default_factory=time.monotonic)  # time.monotonic() when the fake received it


@dataclass
class InteractionResult:
    """What the bot did with one interaction. Updated live as the bot keeps posting."""

    interaction_id: str
    token: str
    callback_type: int | None = None
    callback_data: dict | None = None
    # Every message the bot produced, in order: the JSON body it sent plus
    # "kind": "callback" | "followup" | "edit".
    messages: list[dict] = field(default_factory=list)
    # --- extras beyond the required API -------------------------------------------------
    # Discord message id each entry of `messages` created/edited (parallel list).
    message_ids: list[str] = field(default_factory=list)
    # Current server-side message object per live message id (what GET would return).
    message_objects: dict[str, dict] = field(default_factory=dict, repr=False)
    original_message_id: str | None = None
    deleted_message_ids: list[str] = field(default_factory=list)
    payload: dict = field(default_factory=dict, repr=False)  # the INTERACTION_CREATE `d`
    late_callbacks: int = 0  # callbacks refused past interaction_answer_seconds

    @property
    def content(self) -> str:
        """Content of the last message (for an edit without content: the message's current content)."""
        if not self.messages:
            return ""
        last = self.messages[-1]
        if "content" in last:
            return last["content"] or ""
        obj = self.message_objects.get(self.message_ids[-1])
        return (obj or {}).get("content") or ""

    @property
    def ephemeral(self) -> bool:
        """Whether what the user sees last is ephemeral.

        Uses the *effective* flags Discord would apply: the first followup after an
        ephemeral defer replaces the "thinking" message and is ephemeral whatever flags it
        carries; later followups are ephemeral only if they set flag 64 themselves.
        """
        if self.messages:
            obj = self.message_objects.get(self.message_ids[-1])
            flags = obj["flags"] if obj is not None else (self.messages[-1].get("flags") or 0)
            return bool(flags & FLAG_EPHEMERAL)
        if self.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
            return bool((self.callback_data or {}).get("flags", 0) & FLAG_EPHEMERAL)
        return False
