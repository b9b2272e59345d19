"""A fake Discord (REST API + gateway) for end-to-end tests.

The *real* discord.py client is pointed at this server (``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``), logs in, syncs its command tree,
connects to the gateway and receives real ``INTERACTION_CREATE`` payloads built here.
Everything the bot sends back (interaction callbacks, followups, ``@original`` edits) is
recorded per interaction so tests can assert on it.

This module deliberately does not import discord.py: it speaks the wire protocol only,
so it cannot accidentally "agree" with the client by sharing code with it.

Layout (to make adding behaviour easy):

* all state lives in plain dicts/lists on :class:`FakeDiscord` (guilds, users, commands,
  interactions, gateway sessions);
* the whole REST surface is the route table in :meth:`FakeDiscord._build_app`; handlers
  are ``_h_*`` methods that receive the aiohttp request (the recording middleware has
  already parsed the body into ``request[_RECORD].json`` / ``request[_RECORD].files``);
* gateway opcodes are handled in :meth:`FakeDiscord._on_gateway_frame`;
* guild channel messages (``channel_messages``) are readable with the bot token
  (``GET /channels/{id}/messages``, Discord's paging) and reach the bot as
  MESSAGE_CREATE / MESSAGE_UPDATE through ``_emit_message_create`` /
  ``_edit_channel_message``, filtered by the intents the bot identified with
  (GUILD_MESSAGES to get them at all, MESSAGE_CONTENT for content/embeds/attachments/
  components);
* the fake PixVerse (:meth:`FakeDiscord.add_pixverse`, shared/pixverse-protocol.md part 5)
  answers user-token ``POST /interactions`` with 204 and runs each job as a task
  (``_pixverse_run``) that posts "Waiting to start", edits it to 37% and posts the result
  with videos and buttons, ``pixverse_step_delay`` apart. Tests steer it with the
  ``pixverse_*`` attributes (moderated words, overloaded prompts, blocked tokens, hold /
  release) and read ``pixverse_executing`` / ``pixverse_max_executing`` /
  ``pixverse_interactions`` / ``pixverse_jobs`` / ``message_events``. A decoy application
  with its own ``create`` is listed first in the command index and never answers.
  ``animate`` / ``meme_face`` take an image uploaded first (``POST /channels/{C}/attachments``
  + PUT); the job records it under ``images``; their messages carry the part-4 group
  (``(prompt: P motion: M)`` / ``(prompt: P)``) and their results only ``U1`` / ``ReDo``;
* a member's file for the bot's own slash command: pass a :class:`MemberFile` as the value
  of a type-11 option to ``make_interaction`` / ``invoke``; it lands in
  ``data.resolved.attachments`` and the fake CDN (``/cdn/attachments/...``) serves its bytes.

Wire details that matter (all checked against discord.py 2.7 source):

* discord.py's ``json_or_text`` only parses a body whose Content-Type is *exactly*
  ``application/json``. ``aiohttp.web.json_response`` sends
  ``application/json; charset=utf-8``, which discord.py would hand back as a *string*,
  so every JSON answer here goes through :func:`_json` instead.
* The gateway URL gets ``?v=10&encoding=json&compress=zlib-stream`` appended. discord.py
  only runs the zlib decompressor on *binary* frames, so we simply send text frames.
* Interaction callbacks, followups and ``@original`` requests are sent by discord.py's
  webhook adapter *without* an Authorization header (the token in the URL is the auth).
* discord.py reads some payload keys unconditionally, so they must be present:
  ``attachment_size_limit`` on interactions, ``flags`` on members, ``name``/``position``
  on guild channels, ``author`` (else ``Message.author`` is missing) on messages.
* ``on_ready`` fires ``guild_ready_timeout`` (default 2s) after the last GUILD_CREATE;
  bots under test should pass e.g. ``guild_ready_timeout=0.05``.
* Without ``X-RateLimit-*`` headers discord.py treats every bucket as limit 1, i.e. it
  serialises requests per route+major parameters; that is fine here. (A 429 is only
  treated as a rate limit if it carries a ``Via`` header; otherwise it's a Cloudflare ban.)
* After a type-5 defer, the first followup *edits the loading message* (same id) and keeps
  the defer's ephemerality whatever its own flags say (Discord docs, Create Followup).
* User tokens send ``Authorization: <token>`` raw. Message ids are time-based snowflakes,
  so ``after=<snowflake of a time>`` works; with ``after`` Discord returns the ``limit``
  oldest messages after it, newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import http
import itertools
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "FakeDiscord",
    "InteractionResult",
    "MemberFile",
    "RecordedRequest",
    "RecordedFile",
    "PIXVERSE_APPLICATION_ID",
    "DECOY_APPLICATION_ID",
]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000

# Message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12

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

# The fake PixVerse (see FakeDiscord.add_pixverse and shared/pixverse-protocol.md part 5).
PIXVERSE_APPLICATION_ID = 950000000000000001
DECOY_APPLICATION_ID = 950000000000000777
PIXVERSE_PROGRESS_PERCENT = 37
PIXVERSE_BUTTON_LABELS = ("U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo")
PIXVERSE_SHUFFLE_EMOJI = "\N{TWISTED RIGHTWARDS ARROWS}"  # the emoji-only button
# animate / meme_face results (and the results of their buttons) carry only these (part 4).
PIXVERSE_IMAGE_BUTTON_LABELS = ("U1", "ReDo")
PIXVERSE_IMAGE_COMMANDS = ("animate", "meme_face")
PIXVERSE_DEFAULT_MOTION = 5


def _opt(otype: int, name: str, description: str, required: bool = False, **extra: Any) -> dict:
    return {"type": otype, "name": name, "description": description, "required": required, **extra}


# PixVerse's command options (names as useapi.net names its fields; see the protocol page, part 3).
_PIXVERSE_CREATE_OPTIONS = [
    _opt(OPTION_STRING, "prompt", "Describe the video", True),
    _opt(OPTION_STRING, "style", "Video style", True),
    _opt(OPTION_STRING, "aspect_ratio", "Aspect ratio"),
    _opt(OPTION_STRING, "negative_prompt", "What to keep out of the video"),
    _opt(OPTION_STRING, "character", "Character to star in the video"),
]
PIXVERSE_COMMAND_OPTIONS: dict[str, list[dict]] = {
    "create": _PIXVERSE_CREATE_OPTIONS,
    "create_single": [*_PIXVERSE_CREATE_OPTIONS, _opt(OPTION_INTEGER, "seed_value", "Seed")],
    "animate": [
        _opt(OPTION_ATTACHMENT, "image", "Image to animate", True),
        _opt(OPTION_STRING, "prompt", "Describe the motion"),
        _opt(OPTION_INTEGER, "motion", "Strength of the motion (1-10, default 5)", min_value=1, max_value=10),
        _opt(OPTION_INTEGER, "seed_value", "Seed"),
        _opt(OPTION_STRING, "hd_quality", "HD quality (Yes or No)"),
    ],
    "meme_face": [
        _opt(OPTION_ATTACHMENT, "face", "Face image", True),
        _opt(OPTION_STRING, "prompt", "Describe the video", True),
        _opt(OPTION_STRING, "negative_prompt", "What to keep out of the video"),
        _opt(OPTION_INTEGER, "seed_value", "Seed"),
        _opt(OPTION_STRING, "aspect_ratio", "Aspect ratio"),
    ],
}
PIXVERSE_COMMAND_DESCRIPTIONS = {
    "create": "Create 4 videos from a prompt",
    "create_single": "Create one video from a prompt",
    "animate": "Animate an image",
    "meme_face": "Put a face into a video",
}
# Videos per finished job.
PIXVERSE_VIDEO_COUNTS = {"create": 4, "create_single": 1, "animate": 1, "meme_face": 1}
_ASPECT_SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (1024, 1024), "4:3": (1024, 768), "3:4": (768, 1024)}
_USER_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")

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

# Discord's command/option name rule (simplified: \w covers the unicode letters/digits).
_COMMAND_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


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


# ---------------------------------------------------------------------------------------
# Internal state holders
# ---------------------------------------------------------------------------------------


@dataclass(eq=False)  # identity hash: kept in a set
class _GatewayConnection:
    ws: web.WebSocketResponse
    query: dict[str, str]
    session: _GatewaySession | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, frame: dict | str) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_str(text)


@dataclass(eq=False)
class _GatewaySession:
    session_id: str
    identify: dict
    seq: int = 0
    conn: _GatewayConnection | None = None
    # (seq, serialized frame) of every dispatch, replayed on RESUME.
    backlog: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class _InteractionState:
    result: InteractionResult
    payload: dict
    dispatched_at: int = 0  # len(fake.requests) when dispatched, for diagnostics
    original_loading: bool = False  # deferred and not yet resolved by a followup/edit


# ---------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------


class FakeDiscord:
    """Fake Discord REST + gateway on 127.0.0.1 (random free port)."""

    heartbeat_interval_ms = 41250
    BACKLOG_LIMIT = 1000

    def __init__(
        self,
        *,
        bot_token: str = "bot-token",
        application_id: int = 900000000000000001,
        bot_user_id: int = 900000000000000001,
    ) -> None:
        self.bot_token = bot_token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.bot_username = "fakebot"
        self.application_flags = 0

        # --- state (plain dicts, keyed by int ids) -----------------------------------
        self.guilds: dict[int, dict] = {}  # guild_id -> {"id", "name", "owner_id", "channels": {cid: payload}, ...}
        self.users: dict[int, dict] = {}  # user_id -> user payload (from add_user_token)
        self.user_tokens: dict[str, int] = {}  # raw Authorization value -> user_id
        self.users_me_failure: int | None = None

        self.commands: list[dict] = []  # last global set PUT by the bot, as returned
        self.command_syncs = 0
        self.guild_commands: dict[int, list[dict]] = {}
        self.guild_command_syncs: dict[int, int] = {}
        self._command_ids: dict[tuple, str] = {}  # (guild_id|None, name, type) -> stable id

        # --- recordings ----------------------------------------------------------------
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.identify_payloads: list[dict] = []
        self.gateway_received: list[dict] = []  # every frame the bot sent on the gateway
        self.gateway_connections = 0  # websocket connections accepted so far
        self.gateway_queries: list[dict[str, str]] = []  # query string of each connection (v, encoding, compress)

        # --- interactions --------------------------------------------------------------
        self._interactions_by_id: dict[str, _InteractionState] = {}
        self._interactions_by_token: dict[str, _InteractionState] = {}

        # --- gateway -------------------------------------------------------------------
        # The shard count /gateway/bot recommends. A session that IDENTIFYs with a shard
        # [id, count] gets only the servers of that shard ((guild_id >> 22) % count == id):
        # in READY, GUILD_CREATE, and every event that names a guild, as Discord does.
        self.shard_count = 1
        self._sessions: dict[str, _GatewaySession] = {}
        self._connections: set[_GatewayConnection] = set()

        # --- sync primitives (no loop binding at construction on 3.10+) ---------------
        self._changed = asyncio.Condition()  # notified on every interaction change
        self._identified = asyncio.Event()

        # --- channel messages (the fake PixVerse's posts and the bot's own) -------------
        self.channel_messages: dict[int, list[dict]] = {}  # channel_id -> message objects, oldest first
        # Every MESSAGE_CREATE / MESSAGE_UPDATE the fake emitted, as (event name, snapshot of the message).
        self.message_events: list[tuple[str, dict]] = []

        # --- the fake PixVerse (inactive until add_pixverse) ----------------------------
        self.pixverse_application_id: int | None = None
        self.pixverse_name = "PixVerse"
        self.pixverse_guild_ids: list[int] | None = None  # None: every guild
        self.pixverse_step_delay = 0.05
        self.pixverse_commands: dict[str, dict] = {}  # name -> command object as the index shows it
        self.decoy_application_id = DECOY_APPLICATION_ID
        self.decoy_commands: dict[str, dict] = {}
        self.pixverse_moderated_words: set[str] = set()
        self.pixverse_blocked_tokens: dict[str, int] = {}
        self.pixverse_overloaded_prompts: set[str] = set()
        self.pixverse_hold = False
        self.pixverse_executing: dict[int, int] = {}
        self.pixverse_max_executing: dict[int, int] = {}
        self.pixverse_interactions: list[dict] = []
        self.decoy_interactions: list[dict] = []  # accepted submissions of the decoy's commands
        self.pixverse_jobs: list[dict] = []  # one record per accepted PixVerse interaction (see _pixverse_accept)
        self.pixverse_errors: list[BaseException] = []  # exceptions inside job tasks (re-raised by wait_for_pixverse_idle)
        self.uploads: dict[str, dict] = {}  # upload_filename -> {"filename", "file_size", "data", "channel_id", "user_id"}
        # attachment id -> {filename, size, content_type, data} served by the fake CDN (data None: a fake video)
        self._cdn_files: dict[str, dict] = {}
        self._pixverse_results: dict[str, dict] = {}  # result message id -> {"job": ..., "buttons": {custom_id: label}}
        self._pixverse_tasks: set[asyncio.Task] = set()
        self._pixverse_pending = 0  # accepted jobs whose task has not ended
        self._pixverse_held: list[asyncio.Future] = []  # jobs waiting at the hold point, oldest first

        self._last_snowflake = 0
        self._seq_counter = itertools.count()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._runner = web.AppRunner(self._build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for task in list(self._pixverse_tasks):
            task.cancel()
        for task in list(self._pixverse_tasks):
            with contextlib.suppress(BaseException):
                await task
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake discord stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeDiscord.start() has not been awaited")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ---------------------------------------------------------------- route table

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_middleware])
        a = API_PREFIX
        bot = self._bot_only
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            # login
            ("GET", "/users/@me", self._h_users_me),
            ("GET", "/oauth2/applications/@me", bot(self._h_application)),
            ("GET", "/applications/@me", bot(self._h_application)),
            ("GET", "/gateway", self._h_gateway_info),
            ("GET", "/gateway/bot", bot(self._h_gateway_bot)),
            # application commands
            ("PUT", "/applications/{app_id}/commands", bot(self._h_put_commands)),
            ("GET", "/applications/{app_id}/commands", bot(self._h_get_commands)),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", bot(self._h_put_commands)),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", bot(self._h_get_commands)),
            # interactions (no Authorization: the token in the URL is the credential)
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._h_interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._h_followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._h_get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._h_edit_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._h_delete_webhook_message),
            # guild state
            ("GET", "/channels/{channel_id}", bot(self._h_get_channel)),
            ("GET", "/guilds/{guild_id}", bot(self._h_get_guild)),
            ("GET", "/guilds/{guild_id}/channels", bot(self._h_get_guild_channels)),
            # channel messages (the bot reads history and posts updates)
            ("GET", "/channels/{channel_id}/messages", bot(self._h_get_channel_messages)),
            ("POST", "/channels/{channel_id}/messages", bot(self._h_post_channel_message)),
            ("GET", "/channels/{channel_id}/messages/{message_id}", bot(self._h_get_channel_message)),
            # user-token routes (the account drives PixVerse; raw token in Authorization)
            ("GET", "/guilds/{guild_id}/application-command-index", self._h_command_index),
            ("POST", "/interactions", self._h_user_interaction),
            ("POST", "/channels/{channel_id}/attachments", self._h_attachment_slots),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, a + path, handler)
        # Upload target for user-token attachments and the fake CDN (outside the API prefix).
        app.router.add_put("/upload/{upload_id}", self._h_upload)
        app.router.add_get("/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        app.router.add_get("/media/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        app.router.add_get("/gateway", self._h_gateway_ws)
        app.router.add_get("/gateway/", self._h_gateway_ws)
        # Anything else (any method, any path) is an unknown route. aiohttp keeps looking
        # at later resources when a path matches but the method does not, so this also
        # catches e.g. POST /users/@me.
        app.router.add_route("*", "/{tail:.*}", self._h_unknown)
        return app

    @web.middleware
    async def _record_middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path.rstrip("/") == "/gateway":  # websocket upgrade, not a REST call
            return await handler(request)
        try:
            body, files = await self._read_body(request)
        except ValueError:  # malformed JSON: Discord answers 400, not 500
            body, files = _MALFORMED, []
        path = request.path
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX) :] or "/"
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers=dict(request.headers),
            json=body,
            files=files,
        )
        self.requests.append(rec)
        request[_RECORD] = rec
        if body is _MALFORMED:
            rec.json = None
            response: web.StreamResponse = _error(400, "The request body contains invalid JSON.", 50109)
        else:
            response = await handler(request)
        rec.status = response.status
        return response

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
        if not request.body_exists:
            return None, []
        if request.content_type == "multipart/form-data":
            # discord.py sends attachments as multipart: "payload_json" + "files[n]".
            payload: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files.append(
                        RecordedFile(
                            field=part.name or "",
                            filename=part.filename,
                            content_type=part.headers.get("Content-Type"),
                            data=bytes(await part.read()),
                        )
                    )
            return payload, files
        raw = await request.read()
        if request.content_type == "application/json" and raw:
            return json.loads(raw), []
        return None, []

    def _bot_only(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        """Wrap a handler that requires ``Authorization: Bot <token>`` (as real bot routes do)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != f"Bot {self.bot_token}":
                return _unauthorized()
            return await handler(request)

        return wrapped

    async def _h_unknown(self, request: web.Request) -> web.Response:
        self.unknown_requests.append(request[_RECORD])
        return _error(404, "Unknown route")

    # ---------------------------------------------------------------- ids and payload builders

    def snowflake(self) -> str:
        """A new, strictly increasing snowflake (as a string, like Discord sends them)."""
        sf = ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._seq_counter) & 0xFFF)
        sf = max(sf, self._last_snowflake + 1)
        self._last_snowflake = sf
        return str(sf)

    def bot_user_payload(self) -> dict:
        return {
            "id": str(self.bot_user_id),
            "username": self.bot_username,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "system": False,
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
            "flags": 0,
            "public_flags": 0,
        }

    def user_payload(self, user_id: int) -> dict:
        if user_id == self.bot_user_id:
            return self.bot_user_payload()
        if user_id in self.users:
            return dict(self.users[user_id])
        return {
            "id": str(user_id),
            "username": f"user{user_id}",
            "discriminator": "0",
            "global_name": f"User {user_id}",
            "avatar": None,
            "public_flags": 0,
        }

    def application_payload(self) -> dict:
        return {
            "id": str(self.application_id),
            "name": "Fake Bot",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "owner": self.user_payload(1),
            "team": None,
            "flags": self.application_flags,
            "bot": self.bot_user_payload(),
            # Must be null: otherwise discord.py warns that interactions go to the endpoint.
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
        }

    def member_payload(self, user_id: int, guild_id: int, *, permissions: int | None = None, joined_at: str | None = None) -> dict:
        member = {
            "user": self.user_payload(user_id),
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": [],
            "joined_at": joined_at or _iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,  # discord.py's Member reads data['flags'] unconditionally
            "communication_disabled_until": None,
        }
        if permissions is not None:  # only present in interaction payloads
            member["permissions"] = str(permissions)
        return member

    def add_guild(
        self,
        guild_id: int,
        *,
        name: str = "Guild",
        owner_id: int = 1,
        channel_ids: Sequence[int] | None = None,
    ) -> None:
        """Register a guild with text channels (default: one channel with id ``guild_id + 1``).

        Guilds are announced with GUILD_CREATE right after READY, so add them before the bot
        connects. For a guild added later use
        ``await fake.send_event("GUILD_CREATE", fake.guild_create_payload(guild_id))``.
        """
        if channel_ids is None:
            channel_ids = [guild_id + 1]
        channels: dict[int, dict] = {}
        for position, cid in enumerate(channel_ids):
            channels[cid] = {
                "id": str(cid),
                "type": 0,  # GUILD_TEXT
                "guild_id": str(guild_id),
                "name": f"channel-{position}" if position else "general",
                "position": position,
                "parent_id": None,
                "topic": None,
                "nsfw": False,
                "rate_limit_per_user": 0,
                "last_message_id": None,
                "permission_overwrites": [],
                "flags": 0,
            }
        self.guilds[guild_id] = {
            "id": guild_id,
            "name": name,
            "owner_id": owner_id,
            "channels": channels,
            "everyone_permissions": DEFAULT_EVERYONE_PERMISSIONS,
            "joined_at": _iso(),
        }

    def _find_channel(self, channel_id: int) -> tuple[dict | None, dict | None]:
        for guild in self.guilds.values():
            if channel_id in guild["channels"]:
                return guild, guild["channels"][channel_id]
        return None, None

    def guild_payload(self, guild_id: int) -> dict:
        """REST-style guild object (GET /guilds/{id})."""
        g = self.guilds[guild_id]
        return {
            "id": str(guild_id),
            "name": g["name"],
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(g["owner_id"]),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    # The @everyone role has the guild's id.
                    "id": str(guild_id),
                    "name": "@everyone",
                    "permissions": str(g["everyone_permissions"]),
                    "position": 0,
                    "color": 0,
                    "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "icon": None,
                    "unicode_emoji": None,
                    "flags": 0,
                }
            ],
        }

    def guild_create_payload(self, guild_id: int) -> dict:
        """Gateway GUILD_CREATE `d`: the REST guild plus channels and the bot's own member."""
        g = self.guilds[guild_id]
        payload = self.guild_payload(guild_id)
        payload.update(
            {
                "unavailable": False,
                "large": False,
                "lazy": True,
                "joined_at": g["joined_at"],
                "member_count": 2,
                "members": [self.member_payload(self.bot_user_id, guild_id, joined_at=g["joined_at"])],
                "channels": [dict(c) for c in g["channels"].values()],
                "threads": [],
                "presences": [],
                "voice_states": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
            }
        )
        # Channels inside GUILD_CREATE carry no guild_id (it is implied).
        for c in payload["channels"]:
            c.pop("guild_id", None)
        return payload

    def channel_payload(self, channel_id: int) -> dict | None:
        _, channel = self._find_channel(channel_id)
        return dict(channel) if channel is not None else None

    # ---------------------------------------------------------------- REST: login

    def add_user_token(self, token: str, *, user_id: int, username: str = "user") -> None:
        """GET /users/@me with ``Authorization: <token>`` (exactly, no prefix) answers this user."""
        self.users[user_id] = {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": username,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "locale": "en-US",
            "mfa_enabled": False,
        }
        self.user_tokens[token] = user_id

    async def _h_users_me(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        if auth == f"Bot {self.bot_token}":
            return _json(self.bot_user_payload())
        if not auth:
            return _unauthorized()
        if self.users_me_failure is not None:
            status = self.users_me_failure
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            return _error(status, f"{status}: {phrase}")
        user_id = self.user_tokens.get(auth)
        if user_id is None:
            return _unauthorized()
        return _json(self.users[user_id])

    async def _h_application(self, request: web.Request) -> web.Response:
        return _json(self.application_payload())

    async def _h_gateway_info(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _h_gateway_bot(self, request: web.Request) -> web.Response:
        # Used by AutoShardedClient (plain Client uses DEFAULT_GATEWAY directly).
        return _json(
            {
                "url": self.gateway_url,
                "shards": self.shard_count,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
            }
        )

    # ---------------------------------------------------------------- REST: application commands

    def _check_app_id(self, request: web.Request) -> web.Response | None:
        if request.match_info["app_id"] != str(self.application_id):
            return _error(403, "Missing Access", 50001)
        return None

    @staticmethod
    def _validate_commands(payload: Any) -> list[str]:
        """A subset of Discord's validation, so a command set Discord would reject fails here too."""
        if not isinstance(payload, list):
            return ["body must be an array of application commands"]
        errors: list[str] = []

        def check_options(where: str, options: list[dict]) -> None:
            if len(options) > 25:
                errors.append(f"{where}: more than 25 options")
            seen: set[str] = set()
            optional_seen = False
            for opt in options:
                oname = opt.get("name", "")
                at = f"{where}.{oname}"
                if not _COMMAND_NAME_RE.match(oname) or oname != oname.lower():
                    errors.append(f"{at}: invalid option name")
                if oname in seen:
                    errors.append(f"{at}: duplicate option name")
                seen.add(oname)
                if not 1 <= len(opt.get("description") or "") <= 100:
                    errors.append(f"{at}: description must be 1-100 characters")
                otype = opt.get("type")
                if otype in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP):
                    check_options(at, opt.get("options") or [])
                    continue
                # Required options must come before optional ones.
                if opt.get("required"):
                    if optional_seen:
                        errors.append(f"{at}: required options must be placed before non-required options")
                else:
                    optional_seen = True
                choices = opt.get("choices") or []
                if len(choices) > 25:
                    errors.append(f"{at}: more than 25 choices")
                if choices and opt.get("autocomplete"):
                    errors.append(f"{at}: autocomplete may not be set for options with choices")

        seen_cmds: set[tuple[str, int]] = set()
        for cmd in payload:
            name = cmd.get("name", "")
            ctype = cmd.get("type", 1)
            if not _COMMAND_NAME_RE.match(name) or (ctype == 1 and name != name.lower()):
                errors.append(f"{name!r}: invalid command name")
            if (name, ctype) in seen_cmds:
                errors.append(f"{name!r}: duplicate command name")
            seen_cmds.add((name, ctype))
            if ctype == 1:
                if not 1 <= len(cmd.get("description") or "") <= 100:
                    errors.append(f"{name}: description must be 1-100 characters")
                check_options(name, cmd.get("options") or [])
        return errors

    async def _h_put_commands(self, request: web.Request) -> web.Response:
        if (err := self._check_app_id(request)) is not None:
            return err
        guild_id = int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None
        if guild_id is not None and guild_id not in self.guilds:
            return _error(403, "Missing Access", 50001)
        payload = request[_RECORD].json
        errors = self._validate_commands(payload)
        if errors:
            return _error(
                400,
                "Invalid Form Body",
                50035,
                {"_errors": [{"code": "APPLICATION_COMMAND_INVALID", "message": e} for e in errors]},
            )
        version = self.snowflake()
        result = []
        for cmd in payload:
            ctype = cmd.get("type", 1)
            # Bulk overwrite keeps the id of a command with the same name and type.
            key = (guild_id, cmd["name"], ctype)
            cmd_id = self._command_ids.setdefault(key, self.snowflake())
            out = {
                "default_member_permissions": None,
                "nsfw": False,
                "description": "",
                **cmd,
                "id": cmd_id,
                "application_id": str(self.application_id),
                "version": version,
                "type": ctype,
            }
            if guild_id is not None:
                out["guild_id"] = str(guild_id)
            result.append(out)
        if guild_id is None:
            self.commands = result
            self.command_syncs += 1
        else:
            self.guild_commands[guild_id] = result
            self.guild_command_syncs[guild_id] = self.guild_command_syncs.get(guild_id, 0) + 1
        return _json(result)

    async def _h_get_commands(self, request: web.Request) -> web.Response:
        if (err := self._check_app_id(request)) is not None:
            return err
        if "guild_id" in request.match_info:
            return _json(self.guild_commands.get(int(request.match_info["guild_id"]), []))
        return _json(self.commands)

    # ---------------------------------------------------------------- REST: guild state

    async def _h_get_channel(self, request: web.Request) -> web.Response:
        channel = self.channel_payload(int(request.match_info["channel_id"]))
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        return _json(channel)

    async def _h_get_guild(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"])
        if guild_id not in self.guilds:
            return _error(404, "Unknown Guild", 10004)
        payload = self.guild_payload(guild_id)
        if request.query.get("with_counts") in ("true", "1", "True"):
            payload["approximate_member_count"] = 2
            payload["approximate_presence_count"] = 1
        return _json(payload)

    async def _h_get_guild_channels(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"])
        if guild_id not in self.guilds:
            return _error(404, "Unknown Guild", 10004)
        return _json([dict(c) for c in self.guilds[guild_id]["channels"].values()])

    # ---------------------------------------------------------------- interactions: building

    def _find_command(self, name: str, guild_id: int | None) -> dict | None:
        if guild_id is not None:
            for cmd in self.guild_commands.get(guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        for cmd in self.commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return None

    def make_interaction(
        self,
        name: str,
        options: dict | list | None = None,
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int = 111111111111111111,
        permissions: int = 0x20,  # MANAGE_GUILD
        type: int = INTERACTION_APPLICATION_COMMAND,
        focused: str | None = None,
    ) -> dict:
        """Build an INTERACTION_CREATE `d` for the registered chat-input command ``name``.

        ``name`` may contain spaces to address a subcommand ("group sub" / "cmd sub"): the
        subcommand nesting is built and a dict of ``options`` applies to the leaf.
        ``options`` dict -> typed options from the registered definition (unknown names
        raise); a list is used verbatim as the leaf's options. A :class:`MemberFile` value
        (only for an option registered with type 11, attachment) becomes an attachment the
        member uploaded: the option's value is its id and ``data.resolved.attachments``
        holds it, downloadable from the fake CDN. ``focused`` marks that
        option as focused (added with value "" if absent) and makes this an autocomplete
        interaction (type 4). ``guild_id=None`` builds a DM with the bot.
        """
        parts = name.split()
        cmd = self._find_command(parts[0], guild_id) if parts else None
        if cmd is None:
            registered = [c["name"] for c in self.commands]
            if guild_id is not None:
                registered += [c["name"] for c in self.guild_commands.get(guild_id, [])]
            raise AssertionError(f"command {name!r} is not registered (registered: {registered})")

        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": cmd.get("type", 1)}
        if "guild_id" in cmd:  # guild-scoped command: Discord includes its guild id
            data["guild_id"] = cmd["guild_id"]
        container: dict[str, Any] = data
        definitions: list[dict] = cmd.get("options") or []
        for sub in parts[1:]:
            d = next(
                (o for o in definitions if o["name"] == sub and o.get("type") in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)),
                None,
            )
            if d is None:
                raise AssertionError(f"{name!r}: no subcommand {sub!r} in the registered command")
            node: dict[str, Any] = {"name": sub, "type": d["type"], "options": []}
            container["options"] = [node]
            container = node
            definitions = d.get("options") or []

        resolved_attachments: dict[str, dict] = {}

        def attach(opt_name: str, otype: Any, value: MemberFile) -> str:
            if otype != OPTION_ATTACHMENT:
                raise AssertionError(f"{name!r}: option {opt_name!r} has type {otype}, a MemberFile needs an attachment option (11)")
            att = self._member_attachment(channel_id, value)
            resolved_attachments[att["id"]] = att
            return att["id"]

        if options is None:
            leaf: list[dict] = []
        elif isinstance(options, list):
            leaf = [dict(o) for o in options]
            for o in leaf:
                if isinstance(o.get("value"), MemberFile):
                    o.setdefault("type", OPTION_ATTACHMENT)
                    o["value"] = attach(o.get("name"), o["type"], o["value"])
        else:
            by_name = {o["name"]: o for o in definitions}
            leaf = []
            for opt_name, value in options.items():
                if opt_name not in by_name:
                    raise AssertionError(f"{name!r} has no option {opt_name!r} (has: {sorted(by_name)})")
                otype = by_name[opt_name]["type"]
                if isinstance(value, MemberFile):
                    value = attach(opt_name, otype, value)
                leaf.append({"name": opt_name, "type": otype, "value": value})
        if focused is not None:
            type = INTERACTION_AUTOCOMPLETE
            target = next((o for o in leaf if o.get("name") == focused), None)
            if target is None:
                by_name = {o["name"]: o for o in definitions}
                if focused not in by_name:
                    raise AssertionError(f"{name!r} has no option {focused!r} to focus")
                target = {"name": focused, "type": by_name[focused]["type"], "value": ""}
                leaf.append(target)
            target["focused"] = True
        if leaf or container is not data:
            container["options"] = leaf
        if resolved_attachments:
            data["resolved"] = {"attachments": resolved_attachments}

        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "application_id": str(self.application_id),
            "type": type,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(DEFAULT_EVERYONE_PERMISSIONS),
            "entitlements": [],
            "entitlement_sku_ids": [],
            # discord.py reads this key unconditionally (Interaction.filesize_limit).
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id is not None:
            guild = self.guilds.get(guild_id)
            channel = (guild or {}).get("channels", {}).get(channel_id)
            if channel is None:
                channel = {
                    "id": str(channel_id),
                    "type": 0,
                    "guild_id": str(guild_id),
                    "name": f"channel-{channel_id}",
                    "position": 0,
                    "parent_id": None,
                    "topic": None,
                    "nsfw": False,
                    "rate_limit_per_user": 0,
                    "last_message_id": None,
                    "permission_overwrites": [],
                    "flags": 0,
                }
            channel = dict(channel)
            channel["guild_id"] = str(guild_id)
            channel["permissions"] = str(permissions)  # the invoking member's perms in the channel
            payload.update(
                {
                    "guild_id": str(guild_id),
                    "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
                    "guild_locale": "en-US",
                    "channel": channel,
                    "channel_id": str(channel_id),
                    "member": self.member_payload(user_id, guild_id, permissions=permissions),
                    # "0" = GUILD_INSTALL -> the guild the app is installed in.
                    "authorizing_integration_owners": {"0": str(guild_id)},
                    "context": 0,  # GUILD
                }
            )
        else:
            user = self.user_payload(user_id)
            payload.update(
                {
                    "channel": {
                        "id": str(channel_id),
                        "type": 1,  # DM
                        "last_message_id": None,
                        "flags": 0,
                        "recipients": [user],
                    },
                    "channel_id": str(channel_id),
                    "user": user,
                    # In the bot's DM the guild-install owner is reported as "0".
                    "authorizing_integration_owners": {"0": "0"},
                    "context": 1,  # BOT_DM
                }
            )
        return payload

    def _member_attachment(self, channel_id: int, f: MemberFile) -> dict:
        """The attachment object of a file a member gave to a slash command (served by the fake CDN)."""
        if not isinstance(f.data, (bytes, bytearray)) or not f.filename:
            raise AssertionError(f"MemberFile needs a filename and bytes, got {f!r}")
        att_id = self.snowflake()
        data = bytes(f.data)
        self._cdn_files[att_id] = {"filename": f.filename, "size": len(data), "content_type": f.content_type, "data": data}
        url, proxy_url = self._cdn_urls(channel_id, att_id, f.filename)
        att: dict[str, Any] = {"id": att_id, "filename": f.filename, "size": len(data), "url": url, "proxy_url": proxy_url}
        if f.content_type is not None:
            att["content_type"] = f.content_type
        return att

    def _cdn_urls(self, channel_id: int | str, att_id: str, filename: str) -> tuple[str, str]:
        """(url, proxy_url) of an attachment on the fake CDN, with Discord's signed query (keep it whole)."""
        now = int(time.time())
        path = f"attachments/{channel_id}/{att_id}/{urllib.parse.quote(filename)}"
        query = f"?ex={now + 86400:x}&is={now:x}&hm={secrets.token_hex(32)}&"
        return f"{self.base_url}/cdn/{path}{query}", f"{self.base_url}/media/{path}{query}"

    # ---------------------------------------------------------------- interactions: driving

    def _register_interaction(self, payload: dict) -> _InteractionState:
        existing = self._interactions_by_id.get(str(payload["id"]))
        if existing is not None:
            return existing
        result = InteractionResult(interaction_id=str(payload["id"]), token=payload["token"], payload=payload)
        state = _InteractionState(result=result, payload=payload, dispatched_at=len(self.requests))
        self._interactions_by_id[result.interaction_id] = state
        self._interactions_by_token[result.token] = state
        return state

    def result_for(self, interaction: dict | str) -> InteractionResult:
        """The live result for an interaction payload (or its id) sent via interact/send_event."""
        key = str(interaction["id"]) if isinstance(interaction, dict) else str(interaction)
        return self._interactions_by_id[key].result

    @staticmethod
    def _answered(state: _InteractionState) -> bool:
        result = state.result
        if result.callback_type is None:
            return False
        if result.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
            return bool(result.messages) or bool(result.deleted_message_ids)
        return True

    async def interact(self, payload: dict, *, timeout: float = 10) -> InteractionResult:
        """Dispatch INTERACTION_CREATE and wait until the bot answered it.

        Answered means: a callback of type 4/8 (or any non-deferred type), or for a type-5
        defer the first followup / @original edit. Later messages keep being recorded in the
        returned (live) result; use :meth:`wait_for_messages` to wait for them.
        """
        state = self._register_interaction(payload)
        state.dispatched_at = len(self.requests)
        await self.send_event("INTERACTION_CREATE", payload)
        try:
            await self._wait_until(lambda: self._answered(state), timeout)
        except TimeoutError:
            raise AssertionError(
                f"interaction {payload.get('data', {}).get('name')!r} (id {state.result.interaction_id}) "
                f"was not answered within {timeout}s.\n{self._describe(state)}"
            ) from None
        return state.result

    async def invoke(self, name: str, options: dict | list | None = None, **kw: Any) -> InteractionResult:
        timeout = kw.pop("timeout", 10)
        return await self.interact(self.make_interaction(name, options, **kw), timeout=timeout)

    async def autocomplete(self, name: str, options: dict | list | None, focused: str, **kw: Any) -> list[dict]:
        timeout = kw.pop("timeout", 10)
        result = await self.interact(self.make_interaction(name, options, focused=focused, **kw), timeout=timeout)
        if result.callback_type != CALLBACK_AUTOCOMPLETE_RESULT:
            raise AssertionError(f"expected an autocomplete result (type 8), got callback type {result.callback_type}")
        return list((result.callback_data or {}).get("choices", []))

    async def wait_for_messages(self, result: InteractionResult, count: int, timeout: float = 10) -> list[dict]:
        """Wait until ``result.messages`` holds at least ``count`` messages (total, not additional)."""
        state = self._interactions_by_token[result.token]
        try:
            await self._wait_until(lambda: len(state.result.messages) >= count, timeout)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} message(s) for interaction {result.interaction_id} within {timeout}s, "
                f"got {len(result.messages)}.\n{self._describe(state)}"
            ) from None
        return result.messages

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _describe(self, state: _InteractionState) -> str:
        r = state.result
        since = self.requests[state.dispatched_at :]
        lines = [
            f"  callback: type={r.callback_type} data={r.callback_data}",
            f"  messages: {r.messages}",
            f"  requests since dispatch ({len(since)}):",
            *[f"    {q.method} {q.path} {q.query or ''} -> {q.status} {json.dumps(q.json)[:300] if q.json is not None else ''}" for q in since],
        ]
        if self.unknown_requests:
            lines.append(f"  unknown routes hit: {[f'{q.method} {q.path}' for q in self.unknown_requests]}")
        if not any(s.conn is not None for s in self._sessions.values()):
            lines.append("  NOTE: no bot is currently connected to the gateway")
        return "\n".join(lines)

    def _message_object(self, state: _InteractionState, body: dict, *, message_id: str, flags: int, files: list[RecordedFile]) -> dict:
        """A Discord message object as created by an interaction response/followup."""
        p = state.payload
        user = (p.get("member") or {}).get("user") or p.get("user") or {}
        msg = {
            "id": message_id,
            "type": 20 if p.get("type") == INTERACTION_APPLICATION_COMMAND else 0,  # 20 = CHAT_INPUT_COMMAND
            "channel_id": p.get("channel_id"),
            "author": self.bot_user_payload(),
            "content": body.get("content") or "",
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": self._attachments(body, files),
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "flags": flags,
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction_metadata": {
                "id": state.result.interaction_id,
                "type": p.get("type"),
                "user": user,
                "authorizing_integration_owners": p.get("authorizing_integration_owners", {}),
                "name": (p.get("data") or {}).get("name"),
            },
        }
        if "guild_id" in p:
            msg["guild_id"] = p["guild_id"]
        if "poll" in body:
            msg["poll"] = body["poll"]
        return msg

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

    def _record_message(self, state: _InteractionState, body: dict, kind: str, message_id: str) -> None:
        state.result.messages.append({**body, "kind": kind})
        state.result.message_ids.append(message_id)

    # ---------------------------------------------------------------- REST: interaction callback

    async def _h_interaction_callback(self, request: web.Request) -> web.Response:
        state = self._interactions_by_id.get(request.match_info["interaction_id"])
        if state is None or state.result.token != request.match_info["token"]:
            return _error(404, "Unknown interaction", 10062)
        result = state.result
        if result.callback_type is not None:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        body = request[_RECORD].json or {}
        ctype = body.get("type")
        data = body.get("data")
        result.callback_type = ctype
        result.callback_data = data

        # `with_response=1` (always sent by discord.py >= 2.5) asks for an
        # InteractionCallbackResponse: {"interaction": {...}, "resource": {...}}.
        interaction_info: dict[str, Any] = {"id": result.interaction_id, "type": state.payload.get("type")}
        resource: dict[str, Any] = {"type": ctype}
        if ctype in (CALLBACK_CHANNEL_MESSAGE, CALLBACK_DEFERRED_CHANNEL_MESSAGE, CALLBACK_UPDATE_MESSAGE):
            data = data or {}
            ephemeral = bool((data.get("flags") or 0) & FLAG_EPHEMERAL)
            message_id = self.snowflake()
            if ctype == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
                # The "<bot> is thinking..." placeholder: LOADING (+ EPHEMERAL if requested).
                state.original_loading = True
                msg = self._message_object(state, {}, message_id=message_id, flags=FLAG_LOADING | (FLAG_EPHEMERAL if ephemeral else 0), files=[])
            else:
                msg = self._message_object(state, data, message_id=message_id, flags=data.get("flags") or 0, files=request[_RECORD].files)
                self._record_message(state, data, "callback", message_id)
            result.original_message_id = message_id
            result.message_objects[message_id] = msg
            interaction_info.update(
                {
                    "response_message_id": message_id,
                    "response_message_loading": ctype == CALLBACK_DEFERRED_CHANNEL_MESSAGE,
                    "response_message_ephemeral": ephemeral,
                }
            )
            resource["message"] = msg
        await self._notify()
        if request.query.get("with_response") in ("1", "true", "True"):
            return _json({"interaction": interaction_info, "resource": resource})
        return web.Response(status=204)

    # ---------------------------------------------------------------- REST: interaction webhooks

    def _webhook_state(self, request: web.Request) -> _InteractionState | web.Response:
        """Resolve /webhooks/{app_id}/{token}; the webhook only exists once the interaction was acknowledged."""
        state = self._interactions_by_token.get(request.match_info["token"])
        if request.match_info["app_id"] != str(self.application_id) or state is None or state.result.callback_type is None:
            return _error(404, "Unknown Webhook", 10015)
        return state

    async def _h_followup(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        result = state.result
        body = request[_RECORD].json or {}
        flags = body.get("flags") or 0
        if state.original_loading and result.original_message_id in result.message_objects:
            # The first followup after a defer *replaces* the thinking message: same message
            # id, and its ephemerality is the defer's, whatever this body's flags say.
            state.original_loading = False
            message_id = result.original_message_id
            placeholder = result.message_objects[message_id]
            flags = (flags & ~(FLAG_EPHEMERAL | FLAG_LOADING)) | (placeholder["flags"] & FLAG_EPHEMERAL)
        else:
            message_id = self.snowflake()
        msg = self._message_object(state, body, message_id=message_id, flags=flags, files=request[_RECORD].files)
        result.message_objects[message_id] = msg
        self._record_message(state, body, "followup", message_id)
        await self._notify()
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(msg)
        return web.Response(status=204)

    def _resolve_message_id(self, state: _InteractionState, raw: str) -> str | None:
        message_id = state.result.original_message_id if raw == "@original" else raw
        if message_id is None or message_id not in state.result.message_objects:
            return None
        return message_id

    async def _h_get_webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        message_id = self._resolve_message_id(state, request.match_info["message_id"])
        if message_id is None:
            return _error(404, "Unknown Message", 10008)
        return _json(state.result.message_objects[message_id])

    async def _h_edit_webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        result = state.result
        message_id = self._resolve_message_id(state, request.match_info["message_id"])
        if message_id is None:
            return _error(404, "Unknown Message", 10008)
        body = request[_RECORD].json or {}
        msg = result.message_objects[message_id]
        for key in ("content", "embeds", "components", "poll"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "attachments" in body or request[_RECORD].files:
            msg["attachments"] = self._attachments(body, request[_RECORD].files)
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS can be changed by an edit.
            msg["flags"] = (msg["flags"] & ~FLAG_SUPPRESS_EMBEDS) | (body["flags"] & FLAG_SUPPRESS_EMBEDS)
        if message_id == result.original_message_id and state.original_loading:
            # Editing the thinking message resolves it.
            state.original_loading = False
            msg["flags"] &= ~FLAG_LOADING
        msg["edited_timestamp"] = _iso()
        self._record_message(state, body, "edit", message_id)
        await self._notify()
        return _json(msg)

    async def _h_delete_webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        message_id = self._resolve_message_id(state, request.match_info["message_id"])
        if message_id is None:
            return _error(404, "Unknown Message", 10008)
        del state.result.message_objects[message_id]
        state.result.deleted_message_ids.append(message_id)
        if message_id == state.result.original_message_id:
            state.original_loading = False
        await self._notify()
        return web.Response(status=204)

    # ================================================================ channel messages
    #
    # Messages posted in guild channels (by the fake PixVerse or by the bot through
    # POST /channels/{id}/messages) live in ``channel_messages`` and reach the bot as
    # MESSAGE_CREATE / MESSAGE_UPDATE, filtered by the intents it identified with.

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

    @staticmethod
    def _is_snowflake(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return value >= 0
        return isinstance(value, str) and value.isdigit() and len(value) <= 20

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
        if not raw_id.isdigit() or self.channel_payload(int(raw_id)) is None:
            return _error(404, "Unknown Channel", 10003)
        channel_id = int(raw_id)
        body = request[_RECORD].json
        files = request[_RECORD].files
        if body is None and files:
            body = {}
        if not isinstance(body, dict):
            return _invalid_form(["body: must be a JSON object"])
        content = body.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            return _invalid_form(["content: must be a string"])
        if len(content) > 2000:
            return _invalid_form(["content: Must be 2000 or fewer in length."])
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
        return _json(msg)

    # ================================================================ the fake PixVerse
    #
    # The account's user token submits slash commands / presses buttons with
    # POST /interactions; PixVerse answers 204 and then posts its messages in the channel,
    # step_delay apart (shared/pixverse-protocol.md, parts 3-5). Every accepted job is a
    # task counted in pixverse_executing from the 204 until its final (or moderation /
    # overload) message.

    def add_pixverse(
        self,
        *,
        application_id: int = PIXVERSE_APPLICATION_ID,
        name: str = "PixVerse",
        guild_ids: list[int] | None = None,
        step_delay: float = 0.05,
    ) -> None:
        """Install PixVerse (application + bot user + commands) and a decoy app with its own ``create``.

        ``guild_ids`` limits the guilds whose command index lists them (default: all).
        """
        self.pixverse_application_id = application_id
        self.pixverse_name = name
        self.pixverse_guild_ids = list(guild_ids) if guild_ids is not None else None
        self.pixverse_step_delay = step_delay
        version = self.snowflake()
        self.pixverse_commands = {
            cname: self._app_command(application_id, cname, PIXVERSE_COMMAND_DESCRIPTIONS[cname], options, version)
            for cname, options in PIXVERSE_COMMAND_OPTIONS.items()
        }
        self.decoy_commands = {
            "create": self._app_command(
                self.decoy_application_id, "create", "Create a picture", _PIXVERSE_CREATE_OPTIONS[:2], self.snowflake()
            )
        }

    def pixverse_bump_version(self) -> str:
        """PixVerse re-registers its commands: same ids, a new version (cached versions go stale)."""
        version = self.snowflake()
        for cmd in self.pixverse_commands.values():
            cmd["version"] = version
        return version

    def _app_command(self, app_id: int, name: str, description: str, options: list[dict], version: str) -> dict:
        return {
            "id": self.snowflake(),
            "application_id": str(app_id),
            "version": version,
            "default_member_permissions": None,
            "type": 1,
            "nsfw": False,
            "name": name,
            "description": description,
            "dm_permission": True,
            "contexts": None,
            "integration_types": [0],
            "options": copy.deepcopy(options),
        }

    def pixverse_user_payload(self) -> dict:
        """PixVerse's bot user (its id is the application's id)."""
        if self.pixverse_application_id is None:
            raise AssertionError("add_pixverse() was not called")
        return {
            "id": str(self.pixverse_application_id),
            "username": self.pixverse_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
        }

    def _decoy_user_payload(self) -> dict:
        return {
            "id": str(self.decoy_application_id),
            "username": "Decoy Bot",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
        }

    def _pixverse_in_guild(self, guild_id: int) -> bool:
        return (
            self.pixverse_application_id is not None
            and guild_id in self.guilds
            and (self.pixverse_guild_ids is None or guild_id in self.pixverse_guild_ids)
        )

    # ---------------------------------------------------------------- PixVerse: test controls

    @property
    def pixverse_held(self) -> int:
        """How many jobs are waiting at the hold point (see ``pixverse_hold``)."""
        return len(self._pixverse_held)

    def pixverse_release(self, n: int | None = None) -> int:
        """Let held jobs finish: all of them, or the ``n`` oldest. Returns how many were released.

        Only jobs already waiting are released; a job reaching the hold point later waits
        again while ``pixverse_hold`` is True.
        """
        count = len(self._pixverse_held) if n is None else max(0, min(n, len(self._pixverse_held)))
        released, self._pixverse_held[:count] = self._pixverse_held[:count], []
        for fut in released:
            if not fut.done():
                fut.set_result(None)
        return count

    async def wait_for_pixverse_held(self, count: int = 1, timeout: float = 10) -> None:
        """Wait until at least ``count`` jobs wait at the hold point."""
        try:
            await self._wait_until(lambda: len(self._pixverse_held) >= count, timeout)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} held PixVerse job(s) within {timeout}s, have {len(self._pixverse_held)} "
                f"(pixverse_hold={self.pixverse_hold}, pending={self._pixverse_pending}, executing={self.pixverse_executing})"
            ) from None

    async def wait_for_pixverse_idle(self, timeout: float = 10) -> None:
        """Wait until no PixVerse job is executing or scheduled; re-raise errors from job tasks."""
        try:
            await self._wait_until(lambda: self._pixverse_pending == 0, timeout)
        except TimeoutError:
            raise AssertionError(
                f"PixVerse not idle within {timeout}s: {self._pixverse_pending} job(s) pending, "
                f"{len(self._pixverse_held)} held (pixverse_hold={self.pixverse_hold}), executing={self.pixverse_executing}"
            ) from None
        if self.pixverse_errors:
            raise AssertionError(f"a fake PixVerse job failed: {self.pixverse_errors[0]!r}") from self.pixverse_errors[0]

    # ---------------------------------------------------------------- PixVerse: REST (user token)

    def _user_auth(self, request: web.Request) -> int | web.Response:
        """The user behind a raw user token, or the answer for a blocked / unknown token."""
        auth = request.headers.get("Authorization") or ""
        if auth in self.pixverse_blocked_tokens:
            return self._blocked_response(self.pixverse_blocked_tokens[auth])
        user_id = self.user_tokens.get(auth)
        if user_id is None:
            return _unauthorized()
        return user_id

    @staticmethod
    def _blocked_response(status: int) -> web.Response:
        if status == 401:
            return _unauthorized()
        if status == 403:
            return _error(403, "You need to verify your account in order to perform this action.", 40002)
        if status == 429:
            response = _json({"message": "You are being rate limited.", "retry_after": 1.0, "global": False, "code": 0}, 429)
            # discord.py only treats a 429 with a Via header as a rate limit (else: Cloudflare ban).
            response.headers.update({"Retry-After": "1", "Via": "1.1 google"})
            return response
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return _error(status, f"{status}: {phrase}")

    async def _h_command_index(self, request: web.Request) -> web.Response:
        user = self._user_auth(request)
        if isinstance(user, web.Response):
            return user
        raw_id = request.match_info["guild_id"]
        if not raw_id.isdigit() or int(raw_id) not in self.guilds:
            return _error(404, "Unknown Guild", 10004)
        applications: list[dict] = []
        commands: list[dict] = []
        if self._pixverse_in_guild(int(raw_id)):
            # The decoy comes first, so "the first command named create" is the wrong one.
            applications = [
                {"id": str(self.decoy_application_id), "name": "Decoy Bot", "description": "", "icon": None, "flags": 0,
                 "bot": self._decoy_user_payload()},
                {"id": str(self.pixverse_application_id), "name": self.pixverse_name, "description": "", "icon": None,
                 "flags": 0, "bot": self.pixverse_user_payload()},
            ]
            commands = [*self.decoy_commands.values(), *self.pixverse_commands.values()]
        return _json({"applications": applications, "application_commands": copy.deepcopy(commands)})

    async def _h_attachment_slots(self, request: web.Request) -> web.Response:
        """POST /channels/{C}/attachments: upload slots for a type-11 option (part 3)."""
        user = self._user_auth(request)
        if isinstance(user, web.Response):
            return user
        raw_id = request.match_info["channel_id"]
        if not raw_id.isdigit() or self.channel_payload(int(raw_id)) is None:
            return _error(404, "Unknown Channel", 10003)
        body = request[_RECORD].json
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not files or not all(
            isinstance(f, dict) and isinstance(f.get("filename"), str) and f["filename"]
            and isinstance(f.get("file_size"), int) and not isinstance(f.get("file_size"), bool) and f["file_size"] >= 0
            for f in files
        ):
            return _invalid_form(["files: a list of {filename, file_size, id} is required"])
        out = []
        for f in files:
            upload_id = secrets.token_hex(8)
            upload_filename = f"{upload_id}/{f['filename']}"
            self.uploads[upload_filename] = {
                "upload_id": upload_id,
                "filename": f["filename"],
                "file_size": f["file_size"],
                "data": None,
                "channel_id": int(raw_id),
                "user_id": user,
            }
            out.append(
                {
                    "id": f.get("id"),
                    "upload_url": f"{self.base_url}/upload/{upload_id}?upload_id={secrets.token_urlsafe(12)}",
                    "upload_filename": upload_filename,
                }
            )
        return _json({"attachments": out})

    async def _h_upload(self, request: web.Request) -> web.Response:
        """PUT of the bytes to an upload_url (a storage host: it must not get the Discord token)."""
        record = next((u for u in self.uploads.values() if u["upload_id"] == request.match_info["upload_id"]), None)
        if record is None:
            return web.Response(status=404, text="no such upload")
        if "Authorization" in request.headers:
            return web.Response(status=400, text="Authorization header not allowed on a signed upload URL")
        record["data"] = await request.read()
        return web.Response(status=200)

    async def _h_cdn(self, request: web.Request) -> web.Response:
        """The fake CDN: members' files (their exact bytes) and PixVerse's videos (bytes of the announced size)."""
        info = self._cdn_files.get(request.match_info["attachment_id"])
        if info is None or info["filename"] != request.match_info["filename"]:
            return web.Response(status=404, text="not found")
        data = info.get("data")
        if data is None:
            head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
            data = (head + b"\x00" * info["size"])[: info["size"]]
        return web.Response(status=200, body=data, content_type=info["content_type"] or "application/octet-stream")

    def _interaction_problems(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body: must be a JSON object"]
        problems = []
        itype = body.get("type")
        if itype not in (INTERACTION_APPLICATION_COMMAND, INTERACTION_MESSAGE_COMPONENT) or isinstance(itype, bool):
            problems.append("type: must be 2 (application command) or 3 (message component)")
        for key in ("application_id", "guild_id", "channel_id"):
            if not self._is_snowflake(body.get(key)):
                problems.append(f"{key}: Value is not snowflake.")
        if not isinstance(body.get("session_id"), str) or not body["session_id"]:
            problems.append("session_id: This field is required")
        nonce = body.get("nonce")
        if nonce is not None and not (self._is_snowflake(nonce) and len(str(nonce)) <= 25):
            problems.append("nonce: must be a snowflake")
        data = body.get("data")
        if not isinstance(data, dict):
            problems.append("data: This field is required")
            return problems
        if itype == INTERACTION_APPLICATION_COMMAND:
            if not self._is_snowflake(data.get("id")):
                problems.append("data.id: Value is not snowflake.")
            if not self._is_snowflake(data.get("version")):
                problems.append("data.version: Value is not snowflake.")
            if not isinstance(data.get("name"), str):
                problems.append("data.name: This field is required")
            if data.get("type", 1) != 1:
                problems.append("data.type: only chat input commands (1) are supported")
            if not isinstance(data.get("options", []), list):
                problems.append("data.options: must be a list")
            if not isinstance(data.get("attachments", []), list):
                problems.append("data.attachments: must be a list")
        elif itype == INTERACTION_MESSAGE_COMPONENT:
            if not self._is_snowflake(body.get("message_id")):
                problems.append("message_id: Value is not snowflake.")
            if data.get("component_type") != 2:
                problems.append("data.component_type: must be 2 (button)")
            if not isinstance(data.get("custom_id"), str) or not data["custom_id"]:
                problems.append("data.custom_id: This field is required")
        return problems

    async def _h_user_interaction(self, request: web.Request) -> web.Response:
        """POST /interactions from a user token: a PixVerse slash command (2) or button press (3)."""
        user = self._user_auth(request)
        if isinstance(user, web.Response):
            return user
        body = request[_RECORD].json
        problems = self._interaction_problems(body)
        if problems:
            return _invalid_form(problems)
        guild, channel = self._find_channel(int(body["channel_id"]))
        if guild is None or channel is None:
            return _error(404, "Unknown Channel", 10003)
        if int(body["guild_id"]) != guild["id"]:
            return _invalid_form(["guild_id: the channel is not in this guild"])
        if body["type"] == INTERACTION_APPLICATION_COMMAND:
            return self._pixverse_command(user, body, guild["id"])
        return self._pixverse_button(user, body, guild["id"])

    def _pixverse_command(self, user_id: int, body: dict, guild_id: int) -> web.Response:
        unknown = _error(400, "Unknown application command", 10063)
        data = body["data"]
        app_id = int(body["application_id"])
        if not self._pixverse_in_guild(guild_id):
            return unknown
        if app_id == self.decoy_application_id:
            decoy = next((c for c in self.decoy_commands.values() if c["id"] == str(data["id"])), None)
            if decoy is None or str(data["version"]) != decoy["version"] or data["name"] != decoy["name"]:
                return unknown
            # Accepted like Discord would; the decoy never answers (a client that picked it waits in vain).
            self.decoy_interactions.append({**body, "_user_id": user_id})
            return web.Response(status=204)
        cmd = next((c for c in self.pixverse_commands.values() if c["id"] == str(data["id"])), None)
        if app_id != self.pixverse_application_id or cmd is None or str(data["version"]) != cmd["version"] or data["name"] != cmd["name"]:
            return unknown
        values, problems = self._check_options(cmd, data)
        if problems:
            return _invalid_form(problems)
        name = cmd["name"]
        job = self._new_job(
            user_id=user_id,
            body=body,
            guild_id=guild_id,
            interaction_type=INTERACTION_APPLICATION_COMMAND,
            command=name,
            prompt=values.get("prompt") or "",
            style=values.get("style") or name,
            aspect_ratio=values.get("aspect_ratio") or "16:9",
            videos=PIXVERSE_VIDEO_COUNTS[name],
            group=self._pixverse_group(name, values),
        )
        job["options"] = values
        # The image(s) PixVerse received: option name -> the declared filename and the uploaded bytes.
        job["images"] = {
            oname: {"filename": v["declared_filename"], "uploaded_filename": v["upload_filename"], "data": v["data"]}
            for oname, v in values.items()
            if any(o["name"] == oname and o["type"] == OPTION_ATTACHMENT for o in cmd["options"])
        }
        self.pixverse_interactions.append({**body, "_user_id": user_id})
        self._pixverse_accept(job)
        return web.Response(status=204)

    @staticmethod
    def _pixverse_group(command: str, values: dict[str, Any]) -> str:
        """The parameter group of PixVerse's messages for a command (part 4)."""
        prompt = values.get("prompt") or ""
        if command == "animate":
            return f"(prompt: {prompt} motion: {values.get('motion', PIXVERSE_DEFAULT_MOTION)})"
        if command == "meme_face":
            return f"(prompt: {prompt})"
        return f"(prompt: {prompt} style: {values.get('style') or command} aspect-ratio: {values.get('aspect_ratio') or '16:9'})"

    def _check_options(self, cmd: dict, data: dict) -> tuple[dict[str, Any], list[str]]:
        definitions = {o["name"]: o for o in cmd["options"]}
        values: dict[str, Any] = {}
        problems: list[str] = []
        app_cmd = data.get("application_command")
        if isinstance(app_cmd, dict) and str(app_cmd.get("id")) != cmd["id"]:
            problems.append("data.application_command: does not match data.id")
        attachments = {str(a.get("id")): a for a in data.get("attachments") or [] if isinstance(a, dict)}
        for option in data.get("options") or []:
            oname = option.get("name") if isinstance(option, dict) else None
            definition = definitions.get(oname) if isinstance(oname, str) else None
            if definition is None:
                problems.append(f"data.options: unknown option {oname!r}")
                continue
            if oname in values:
                problems.append(f"data.options.{oname}: duplicate option")
                continue
            otype, value = option.get("type"), option.get("value")
            if otype != definition["type"]:
                problems.append(f"data.options.{oname}: type must be {definition['type']}")
            elif otype == OPTION_STRING and not isinstance(value, str):
                problems.append(f"data.options.{oname}: value must be a string")
            elif otype == OPTION_STRING and definition["required"] and not value.strip():
                problems.append(f"data.options.{oname}: must not be empty")
            elif otype == OPTION_INTEGER and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"data.options.{oname}: value must be an integer")
            elif otype == OPTION_INTEGER and not definition.get("min_value", value) <= value <= definition.get("max_value", value):
                problems.append(f"data.options.{oname}: must be between {definition.get('min_value')} and {definition.get('max_value')}")
            elif otype == OPTION_ATTACHMENT:
                att = attachments.get(str(value))
                upload = self.uploads.get((att or {}).get("uploaded_filename") or "")
                if att is None or upload is None or upload["data"] is None:
                    problems.append(f"data.options.{oname}: no uploaded attachment with id {value!r} in data.attachments")
                else:
                    # The upload record, plus what the interaction declared for it.
                    value = {**upload, "upload_filename": att["uploaded_filename"],
                             "declared_filename": att.get("filename") or upload["filename"]}
            values[oname] = value
        for oname, definition in definitions.items():
            if definition["required"] and oname not in values:
                problems.append(f"data.options.{oname}: This field is required")
        return values, problems

    def _pixverse_button(self, user_id: int, body: dict, guild_id: int) -> web.Response:
        unknown = _error(400, "Unknown interaction", 10062)
        if self.pixverse_application_id is None or int(body["application_id"]) != self.pixverse_application_id:
            return unknown
        entry = self._pixverse_results.get(str(body["message_id"]))
        if entry is None or entry["message"]["channel_id"] != str(body["channel_id"]):
            return unknown
        label = entry["buttons"].get(body["data"]["custom_id"])
        if label is None:
            return unknown
        origin = entry["job"]
        job = self._new_job(
            user_id=user_id,
            body=body,
            guild_id=guild_id,
            interaction_type=INTERACTION_MESSAGE_COMPONENT,
            command=origin["command"],
            prompt=origin["prompt"],
            style=origin["style"],
            aspect_ratio=origin["aspect_ratio"],
            videos=1 if label.startswith("U") else 4,
            group=origin["group"],
        )
        job["button"] = label
        job["reference"] = entry["message"]
        self.pixverse_interactions.append({**body, "_user_id": user_id})
        self._pixverse_accept(job)
        return web.Response(status=204)

    # ---------------------------------------------------------------- PixVerse: jobs

    def _new_job(self, *, user_id: int, body: dict, guild_id: int, interaction_type: int, command: str, prompt: str,
                 style: str, aspect_ratio: str, videos: int, group: str) -> dict:
        """One record of ``pixverse_jobs``."""
        lowered = prompt.lower()
        if any(w.lower() in lowered for w in self.pixverse_moderated_words):
            outcome = "moderated"
        elif any(p.lower() in lowered for p in self.pixverse_overloaded_prompts):
            outcome = "overloaded"
        else:
            outcome = "completed"
        return {
            "interaction_id": self.snowflake(),
            "interaction_type": interaction_type,
            "user_id": user_id,
            "guild_id": guild_id,
            "channel_id": int(body["channel_id"]),
            "command": command,
            "button": None,  # label/emoji of the pressed button (type 3)
            "reference": None,  # the result message the button was on (type 3)
            "prompt": prompt,
            "style": style,
            "aspect_ratio": aspect_ratio,
            "group": group,  # the parameter group in every message's content, e.g. "(prompt: P motion: 5)"
            "images": {},  # type-11 options received: name -> {"filename", "uploaded_filename", "data"}
            "videos": videos,
            "outcome": outcome,  # decided at submission: completed | moderated | overloaded
            "state": "scheduled",  # scheduled -> started -> progress [-> held -> progress] -> completed | moderated | overloaded
            "message_ids": [],  # every message PixVerse posted for this job, in order
            "result_message_id": None,
            "done": False,
        }

    def _pixverse_accept(self, job: dict) -> None:
        uid = job["user_id"]
        self.pixverse_executing[uid] = self.pixverse_executing.get(uid, 0) + 1
        self.pixverse_max_executing[uid] = max(self.pixverse_max_executing.get(uid, 0), self.pixverse_executing[uid])
        self.pixverse_jobs.append(job)
        self._pixverse_pending += 1
        task = asyncio.create_task(self._pixverse_run(job))
        self._pixverse_tasks.add(task)
        task.add_done_callback(self._pixverse_tasks.discard)

    def _pixverse_end(self, job: dict, state: str) -> None:
        """The job stops executing at PixVerse (counted down exactly once)."""
        job["state"] = state
        if not job["done"]:
            job["done"] = True
            self.pixverse_executing[job["user_id"]] -= 1

    async def _pixverse_run(self, job: dict) -> None:
        delay = self.pixverse_step_delay
        uid = job["user_id"]
        head = f"<@{uid}> {job['group']}"
        cancelled = False
        fut: asyncio.Future | None = None
        try:
            await asyncio.sleep(delay)
            if job["outcome"] == "moderated":
                self._pixverse_end(job, "moderated")
                embed = {"type": "rich", "title": "Banned prompt", "description": job["prompt"], "color": 0xED4245}
                await self._pixverse_post(job, content=head, first=True, embeds=[embed])
                return
            if job["outcome"] == "overloaded":
                self._pixverse_end(job, "overloaded")
                embed = {"type": "rich", "title": "Too many requests", "description": "The queue is full, try again later",
                         "color": 0xFEE75C}
                await self._pixverse_post(job, content=head, first=True, embeds=[embed])
                return
            waiting = await self._pixverse_post(job, content=f"{head} (Waiting to start)", first=True)
            job["state"] = "started"
            await asyncio.sleep(delay)
            await self._edit_channel_message(waiting, content=f"{head} ({PIXVERSE_PROGRESS_PERCENT}%)")
            job["state"] = "progress"
            if self.pixverse_hold:
                fut = asyncio.get_running_loop().create_future()
                self._pixverse_held.append(fut)
                job["state"] = "held"
                await self._notify()
                await fut
                job["state"] = "progress"
            await asyncio.sleep(delay)
            components, buttons = self._pixverse_components(job["command"])
            # Counted down before the final message goes out: whoever sees it may submit at once.
            self._pixverse_end(job, "completed")
            final = await self._pixverse_post(
                job,
                content=f"{head} Author: <@{uid}>",
                first=False,
                attachments=self._pixverse_attachments(job),
                components=components,
            )
            job["result_message_id"] = final["id"]
            self._pixverse_results[final["id"]] = {"job": job, "message": final, "buttons": buttons}
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:  # kept for wait_for_pixverse_idle, never lost in a task
            self.pixverse_errors.append(exc)
        finally:
            if fut is not None and fut in self._pixverse_held:
                self._pixverse_held.remove(fut)
            if not job["done"]:
                self._pixverse_end(job, "cancelled" if cancelled else "failed")
            self._pixverse_pending -= 1
            if not cancelled:
                await self._notify()

    async def _pixverse_post(self, job: dict, *, content: str, first: bool, embeds: list[dict] | None = None,
                             attachments: list[dict] | None = None, components: list[dict] | None = None) -> dict:
        """Post a PixVerse message for ``job``; the first one answers the interaction (interaction_metadata)."""
        assert self.pixverse_application_id is not None
        reference = job["reference"]
        if reference is not None:
            mtype = MESSAGE_REPLY
        else:
            mtype = MESSAGE_CHAT_INPUT_COMMAND if first else MESSAGE_DEFAULT
        user = self.public_user_payload(job["user_id"])
        msg = self.channel_message_object(
            channel_id=job["channel_id"],
            author=self.pixverse_user_payload(),
            content=content,
            type=mtype,
            embeds=embeds,
            attachments=attachments,
            components=components,
            mentions=[job["user_id"]],
            reference=reference,
        )
        if first:
            app = str(self.pixverse_application_id)
            metadata: dict[str, Any] = {
                "id": job["interaction_id"],
                "type": job["interaction_type"],
                "user": user,
                "authorizing_integration_owners": {"0": str(job["guild_id"])},
            }
            if job["interaction_type"] == INTERACTION_APPLICATION_COMMAND:
                metadata.update(name=job["command"], command_type=1)
                msg["interaction"] = {"id": job["interaction_id"], "type": 2, "name": job["command"], "user": user}
            else:
                metadata["interacted_message_id"] = reference["id"] if reference else None
            msg.update(application_id=app, webhook_id=app, interaction_metadata=metadata)
        job["message_ids"].append(msg["id"])
        await self._emit_message_create(msg)
        return msg

    def _pixverse_attachments(self, job: dict) -> list[dict]:
        width, height = _ASPECT_SIZES.get(job["aspect_ratio"], (1024, 1024))
        out = []
        for index in range(1, job["videos"] + 1):
            att_id = self.snowflake()
            filename = f"pixverse_{index}.mp4"
            size = 4096 + index
            url, proxy_url = self._cdn_urls(job["channel_id"], att_id, filename)
            self._cdn_files[att_id] = {"filename": filename, "size": size, "content_type": "video/mp4", "data": None}
            out.append(
                {
                    "id": att_id,
                    "filename": filename,
                    "size": size,
                    "url": url,
                    "proxy_url": proxy_url,
                    "content_type": "video/mp4",
                    "width": width,
                    "height": height,
                }
            )
        return out

    @staticmethod
    def _pixverse_components(command: str = "create") -> tuple[list[dict], dict[str, str]]:
        """Action rows U1-U4 / V1-V4 / ReDo + the emoji-only shuffle (animate / meme_face: one row
        U1, ReDo); opaque random custom_ids."""
        buttons: dict[str, str] = {}

        def button(label: str | None = None, emoji: str | None = None) -> dict:
            custom_id = f"pv::{secrets.token_hex(12)}"
            b: dict[str, Any] = {"type": 2, "style": 2, "custom_id": custom_id}
            if label is not None:
                b["label"] = label
            if emoji is not None:
                b["emoji"] = {"name": emoji, "id": None}
            buttons[custom_id] = label or emoji or ""
            return b

        if command in PIXVERSE_IMAGE_COMMANDS:
            return [{"type": 1, "components": [button(label) for label in PIXVERSE_IMAGE_BUTTON_LABELS]}], buttons
        rows = [
            {"type": 1, "components": [button(label) for label in PIXVERSE_BUTTON_LABELS[0:4]]},
            {"type": 1, "components": [button(label) for label in PIXVERSE_BUTTON_LABELS[4:8]]},
            {"type": 1, "components": [button("ReDo"), button(emoji=PIXVERSE_SHUFFLE_EMOJI)]},
        ]
        return rows, buttons

    # ---------------------------------------------------------------- gateway

    async def wait_for_identify(self, timeout: float = 10) -> None:
        """Wait until a bot identified and was sent READY + its GUILD_CREATEs."""
        try:
            async with asyncio.timeout(timeout):
                await self._identified.wait()
        except TimeoutError:
            raise AssertionError(
                f"no bot identified on the fake gateway within {timeout}s "
                f"(connections: {self.gateway_connections}, frames received: {self.gateway_received[-5:]}, "
                f"requests: {[f'{r.method} {r.path} -> {r.status}' for r in self.requests]})"
            ) from None

    async def send_event(self, t: str, d: dict) -> None:
        """Dispatch a gateway event (op 0, next sequence number) to every bot session.

        Sessions whose connection dropped without a clean close keep the event in their
        backlog and get it replayed when they RESUME, like Discord does.
        """
        if t == "INTERACTION_CREATE":
            self._register_interaction(d)
        sessions = [s for s in self._sessions.values() if self._serves(s, d.get("guild_id"))]
        if not sessions:
            raise AssertionError(f"send_event({t}): no bot session on the fake gateway serves it (did the bot connect?)")
        for session in sessions:
            await self._dispatch(session, t, d)

    @staticmethod
    def shard_of(guild_id: int | str, count: int) -> int:
        return (int(guild_id) >> 22) % count

    def _serves(self, session: _GatewaySession, guild_id: int | str | None) -> bool:
        """Whether a session receives the events of a server: all of them unsharded, else its shard's."""
        shard = session.identify.get("shard")
        if guild_id is None or not shard:
            return True
        return self.shard_of(guild_id, shard[1]) == shard[0]

    def sessions_by_shard(self) -> dict[int, int]:
        """Shard id -> number of live sessions identified for it (unsharded sessions count as 0)."""
        counts: dict[int, int] = {}
        for session in self._sessions.values():
            shard = (session.identify.get("shard") or [0, 1])[0]
            counts[shard] = counts.get(shard, 0) + 1
        return counts

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT to every connected bot (discord.py then reconnects and RESUMEs)."""
        for conn in list(self._connections):
            await conn.send({"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    async def _dispatch(self, session: _GatewaySession, t: str, d: Any) -> None:
        session.seq += 1
        text = json.dumps({"op": OP_DISPATCH, "t": t, "s": session.seq, "d": d})
        session.backlog.append((session.seq, text))
        del session.backlog[: -self.BACKLOG_LIMIT]
        if session.conn is not None:
            await session.conn.send(text)

    async def _h_gateway_ws(self, request: web.Request) -> web.WebSocketResponse:
        # discord.py connects with ?v=10&encoding=json&compress=zlib-stream. We ignore
        # `compress` and send text frames, which discord.py never tries to decompress.
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConnection(ws=ws, query=dict(request.query))
        self._connections.add(conn)
        self.gateway_connections += 1
        self.gateway_queries.append(conn.query)
        try:
            await conn.send({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        frame = json.loads(msg.data)
                    except ValueError:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    self.gateway_received.append(frame)
                    await self._on_gateway_frame(conn, frame)
                elif msg.type is WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
        finally:
            self._connections.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A clean close (1000/1001) by the client ends the session (Discord
                # invalidates it); anything else (discord.py uses 4000) stays resumable.
                if ws.close_code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY):
                    self._sessions.pop(session.session_id, None)
        return ws

    async def _on_gateway_frame(self, conn: _GatewayConnection, frame: dict) -> None:
        op = frame.get("op")
        d = frame.get("d")
        if op == OP_HEARTBEAT:
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._on_identify(conn, d or {})
        elif op == OP_RESUME:
            await self._on_resume(conn, d or {})
        elif op in (OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE, OP_REQUEST_GUILD_MEMBERS):
            if conn.session is None:
                await conn.ws.close(code=4003, message=b"Not authenticated.")
            # Otherwise accepted and ignored (recorded in gateway_received).
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _on_identify(self, conn: _GatewayConnection, d: dict) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if d.get("token") != self.bot_token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = d.get("shard")
        if shard is not None and (len(shard) != 2 or not 0 <= shard[0] < shard[1]):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        self.identify_payloads.append(d)
        session = _GatewaySession(session_id=secrets.token_hex(16), identify=d, conn=conn)
        conn.session = session
        self._sessions[session.session_id] = session
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.bot_user_payload(),
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds if self._serves(session, gid)],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        await self._dispatch(session, "READY", ready)
        # Guilds arrive unavailable in READY and are filled in by GUILD_CREATE. discord.py
        # fires on_ready `guild_ready_timeout` (default 2s) after the last GUILD_CREATE.
        for guild_id in self.guilds:
            if self._serves(session, guild_id):
                await self._dispatch(session, "GUILD_CREATE", self.guild_create_payload(guild_id))
        self._identified.set()

    async def _on_resume(self, conn: _GatewayConnection, d: dict) -> None:
        session = self._sessions.get(d.get("session_id") or "")
        if session is None or d.get("token") != self.bot_token:
            # d=false: not resumable, the client must IDENTIFY again (discord.py waits 5s first).
            await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        if session.conn is not None and session.conn is not conn:
            with contextlib.suppress(Exception):
                await session.conn.ws.close(code=4000, message=b"Session resumed elsewhere.")
        session.conn = conn
        conn.session = session
        last_seq = d.get("seq") or 0
        for seq, text in list(session.backlog):
            if seq > last_seq:
                await conn.send(text)
        await self._dispatch(session, "RESUMED", {"_trace": ["fake-discord"]})
