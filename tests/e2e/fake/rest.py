"""REST: the aiohttp app (one route table for every concern), recording, login, commands, guild state, CDN.

:meth:`RestMixin._build_app` is the whole REST surface: handlers are ``_h_*`` methods of
the mixins (this module's, and ``interactions`` / ``messages`` / ``pixverse`` ones), each
receiving the aiohttp request after the recording middleware parsed its body into
``request[_RECORD].json`` / ``request[_RECORD].files``. Unknown routes answer 404 and are
kept in ``unknown_requests``.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import re
import secrets
import time
import urllib.parse
from typing import Any, Awaitable, Callable, Sequence

from aiohttp import web

from tests.e2e.fake.payloads import (
    _MALFORMED,
    _RECORD,
    API_PREFIX,
    DEFAULT_EVERYONE_PERMISSIONS,
    DISCORD_EPOCH_MS,
    OPTION_SUB_COMMAND,
    OPTION_SUB_COMMAND_GROUP,
    RecordedFile,
    RecordedRequest,
    _error,
    _iso,
    _json,
    _unauthorized,
    text_channel,
)

# Discord's command/option name rule (simplified: \w covers the unicode letters/digits).
_COMMAND_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


class RestMixin:
    """The HTTP server and the REST state: guilds, users and tokens, commands, recorded requests, CDN files."""

    def _init_rest(self, *, bot_token: str, application_id: int, bot_user_id: int) -> None:
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

        # attachment id -> {filename, size, content_type, data} served by the fake CDN (data None: a fake video)
        self._cdn_files: dict[str, dict] = {}
        self.cdn_delay = 0.0  # seconds before the CDN answers
        self.clock_ahead = 0.0  # seconds Discord's clock (its snowflakes' times) is ahead of this machine's

        self._last_snowflake = 0
        self._seq_counter = itertools.count()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ---------------------------------------------------------------- server

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeDiscord.start() has not been awaited")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return self.base_url + API_PREFIX

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
            # interactions (interactions.py; no Authorization: the token in the URL is the credential)
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._h_interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._h_followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._h_get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._h_edit_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._h_delete_webhook_message),
            # guild state
            ("GET", "/channels/{channel_id}", bot(self._h_get_channel)),
            ("GET", "/guilds/{guild_id}", bot(self._h_get_guild)),
            ("GET", "/guilds/{guild_id}/channels", bot(self._h_get_guild_channels)),
            # channel messages (messages.py: the bot reads history, posts and edits its own)
            ("GET", "/channels/{channel_id}/messages", bot(self._h_get_channel_messages)),
            ("POST", "/channels/{channel_id}/messages", bot(self._h_post_channel_message)),
            ("GET", "/channels/{channel_id}/messages/{message_id}", bot(self._h_get_channel_message)),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", bot(self._h_edit_channel_message)),
            # user-token routes (pixverse.py: the account drives PixVerse; raw token in Authorization)
            ("GET", "/guilds/{guild_id}/application-command-index", self._h_command_index),
            ("POST", "/interactions", self._h_user_interaction),
            ("POST", "/channels/{channel_id}/attachments", self._h_attachment_slots),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, a + path, handler)
        # Upload target for user-token attachments (pixverse.py) and the fake CDN (outside the API prefix).
        app.router.add_put("/upload/{upload_id}", self._h_upload)
        app.router.add_get("/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        app.router.add_get("/media/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        # The gateway websocket (gateway.py).
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
        received = time.monotonic()
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
            at=received,
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
        sf = ((int((time.time() + self.clock_ahead) * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._seq_counter) & 0xFFF)
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
            channels[cid] = text_channel(cid, guild_id, name=f"channel-{position}" if position else "general",
                                         position=position)
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

    # ---------------------------------------------------------------- the fake CDN (members' files, PixVerse's videos)

    def _cdn_urls(self, channel_id: int | str, att_id: str, filename: str) -> tuple[str, str]:
        """(url, proxy_url) of an attachment on the fake CDN, with Discord's signed query (keep it whole)."""
        now = int(time.time())
        path = f"attachments/{channel_id}/{att_id}/{urllib.parse.quote(filename)}"
        query = f"?ex={now + 86400:x}&is={now:x}&hm={secrets.token_hex(32)}&"
        return f"{self.base_url}/cdn/{path}{query}", f"{self.base_url}/media/{path}{query}"

    async def _h_cdn(self, request: web.Request) -> web.Response:
        """The fake CDN: members' files (their exact bytes) and PixVerse's videos (bytes of the announced size),
        each answered after ``cdn_delay`` seconds (a slow CDN, when a test sets it)."""
        await asyncio.sleep(self.cdn_delay)
        info = self._cdn_files.get(request.match_info["attachment_id"])
        if info is None or info["filename"] != request.match_info["filename"]:
            return web.Response(status=404, text="not found")
        data = info.get("data")
        if data is None:
            head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
            data = (head + b"\x00" * info["size"])[: info["size"]]
        return web.Response(status=200, body=data, content_type=info["content_type"] or "application/octet-stream")
