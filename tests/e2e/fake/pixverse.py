"""The fake PixVerse (shared/pixverse-protocol.md part 5), driven by user tokens.

The account's user token submits slash commands / presses buttons with
``POST /interactions``; PixVerse answers 204 and then posts its messages in the channel,
``pixverse_step_delay`` apart (parts 3-5): "Waiting to start", one edit per value of
``pixverse_progress_steps`` (default ``[37]``: "(37%)"), then the result with videos and
buttons. Every accepted job is a task counted in ``pixverse_executing`` from the 204 until
its final (or moderation / overload) message. Also here: the command index with its decoy
application, attachment upload slots and the upload target.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http
import secrets
from typing import Any

from aiohttp import web

from tests.e2e.fake.payloads import (
    _RECORD,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_MESSAGE_COMPONENT,
    MESSAGE_CHAT_INPUT_COMMAND,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    OPTION_ATTACHMENT,
    OPTION_INTEGER,
    OPTION_STRING,
    _error,
    _invalid_form,
    _json,
    _unauthorized,
)

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


class PixverseMixin:
    """PixVerse's application, commands, decoy, uploads and jobs (inactive until :meth:`add_pixverse`)."""

    def _init_pixverse(self) -> None:
        # --- the fake PixVerse (inactive until add_pixverse) ----------------------------
        self.pixverse_application_id: int | None = None
        self.pixverse_name = "PixVerse"
        self.pixverse_guild_ids: list[int] | None = None  # None: every guild
        self.pixverse_step_delay = 0.05
        # One edit of the progress message per value, in order, pixverse_step_delay apart.
        self.pixverse_progress_steps: list[int] = [PIXVERSE_PROGRESS_PERCENT]
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
        self._pixverse_results: dict[str, dict] = {}  # result message id -> {"job": ..., "buttons": {custom_id: label}}
        self._pixverse_tasks: set[asyncio.Task] = set()
        self._pixverse_pending = 0  # accepted jobs whose task has not ended
        self._pixverse_held: list[asyncio.Future] = []  # jobs waiting at the hold point, oldest first

    async def _stop_pixverse_jobs(self) -> None:
        for task in list(self._pixverse_tasks):
            task.cancel()
        for task in list(self._pixverse_tasks):
            with contextlib.suppress(BaseException):
                await task

    # ---------------------------------------------------------------- PixVerse: application and commands

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

    @staticmethod
    def _is_snowflake(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return value >= 0
        return isinstance(value, str) and value.isdigit() and len(value) <= 20

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
        steps = list(self.pixverse_progress_steps)
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
            for percent in steps:
                await asyncio.sleep(delay)
                await self._edit_channel_message(waiting, content=f"{head} ({percent}%)")
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
