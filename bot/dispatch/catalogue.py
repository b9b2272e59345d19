"""Every PixVerse command, declared once: its parameters and how a job of it is described.

From a :class:`Command` come the request validation (with the seed's style of texts), the slash
command's options (names, types, choices, limits, descriptions: see ``cogs/jobs.py``), the
OpenAPI document's request bodies (``bot/web/openapi.py``), the options sent to PixVerse
(``bot/dispatch/backends/discord.py``) and the job's one-line description. A new parameter or
command is a change here; ``tests/test_catalogue.py`` checks that the slash commands, the OpenAPI
document and the validator agree with this module for every verb.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bot.accounts.validation import echo
from bot.dispatch.images import IMAGE_LIMIT, Image, too_large
from bot.dispatch.models import Verb
from bot.errors import bad_request
from bot.text import utf8_encodable

PROMPT_LIMIT = 512
CHARACTER_LIMIT = 100
SEED_MAX = 2_147_483_647
MOTION_MIN, MOTION_MAX = 1, 10
STYLES = ("Realistic", "Anime", "3D Animation")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
BUTTONS = ("U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "ReDo", "🔀")
YES_NO = ("Yes", "No")

# text: a string; integer: a whole number (form bodies send it as text); image: a file (an HTTP
# file part, a Discord attachment), checked by its bytes (bot/dispatch/images.py).
Kind = Literal["text", "integer", "image"]


@dataclass(frozen=True)
class Param:
    """One parameter of a command, under one name everywhere: the HTTP field, the slash option, the
    key in the job's parameters and (``pixverse``) the option PixVerse's command declares."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pixverse: str | None = None  # the PixVerse option it becomes; None: not sent to PixVerse
    aliases: tuple[str, ...] = ()  # older names the HTTP API still accepts
    requires: tuple[str, str] | None = None  # (other param, value): only allowed together

    def limits(self, max_length: str, minimum: str, maximum: str) -> dict[str, int]:
        """The limits that are set, under the names a consumer gives them (OpenAPI's, Discord's)."""
        named = ((max_length, self.max_length), (minimum, self.minimum), (maximum, self.maximum))
        return {name: value for name, value in named if value is not None}


@dataclass(frozen=True)
class Command:
    verb: Verb
    slash_name: str
    description: str
    params: tuple[Param, ...]
    videos: int  # how many videos PixVerse answers with
    # How PixVerse's replies to it are recognised: the parameter group its messages show
    # (bot/pixverse/parser.py REPLY_GROUPS); None for a button (found by the message it replies to).
    replies: str | None

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def images(self) -> tuple[Param, ...]:
        """Its image parameters: a request with one is sent as multipart/form-data."""
        return tuple(p for p in self.params if p.kind == "image")

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters of a request, checked in declaration order; raises ApiError 400 with the
        seed's style of texts. Absent or empty optional parameters are left out; a parameter that
        only another command takes is refused last."""
        params: dict[str, Any] = {}
        for param in self.params:
            names = [alias for alias in (param.name, *param.aliases) if body.get(alias) is not None]
            if len(names) > 1:
                raise bad_request(f"Param {' and '.join(names)} are one parameter: send {param.name} only")
            given = names[0] if names else None
            value = _check(param, given or param.name, None if given is None else body[given])
            if value is None:
                continue
            if param.requires is not None and params.get(param.requires[0]) != param.requires[1]:
                other, wanted = param.requires
                raise bad_request(f"Param {param.name} is supported only with {other} {wanted},"
                                  f" not {params.get(other)}")
            params[param.name] = value
        for name, value in body.items():
            if value is None or _declares(self, name) or name not in _PARAM_NAMES:
                continue
            owners = [c.verb.value for c in CATALOGUE.values() if _declares(c, name)]
            raise bad_request(f"Param {name} is supported only by {', '.join(owners)}")
        return params

    def pixverse_options(self, params: Mapping[str, Any], images: Mapping[str, Image] | None = None) -> dict[str, Any]:
        """The options sent to PixVerse's command for a job's parameters (older names included);
        an image option takes the image itself (``images``, by parameter name, from the store)."""
        options: dict[str, Any] = {}
        for param in self.params:
            if param.pixverse is None:
                continue
            if param.kind == "image":
                if images and param.name in images:
                    options[param.pixverse] = images[param.name]
                continue
            for key in (param.name, *param.aliases):
                if params.get(key) is not None:
                    options[param.pixverse] = params[key]
                    break
        return options

    def openapi_body(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON schema of this command's request body (``extra``: fields every job request takes)."""
        properties: dict[str, Any] = {}
        for param in self.params:
            schema: dict[str, Any] = {"type": "integer" if param.kind == "integer" else "string",
                                      "description": param.description}
            if param.kind == "image":
                schema["format"] = "binary"
            if param.choices:
                schema["enum"] = list(param.choices)
            schema.update(param.limits("maxLength", "minimum", "maximum"))
            properties[param.name] = schema
            for alias in param.aliases:
                properties[alias] = {**schema, "description": f"older name of {param.name}", "deprecated": True}
        return {"type": "object", "properties": {**properties, **extra},
                "required": [p.name for p in self.params if p.required]}

    def describe(self, params: Mapping[str, Any], parent_job_id: str | None = None) -> str:
        """A job's one-line description, as members read it."""
        if self.verb is Verb.BUTTON:
            return f"button {params.get('button')} on jobid: {parent_job_id}"
        shown = [params.get("style")] + [(params.get(p.name) or {}).get("filename") for p in self.images]
        what = ", ".join(str(s) for s in shown if s)
        return f"{self.verb.value} “{params.get('prompt') or ''}”" + (f" ({what})" if what else "")


def integer_fields() -> set[str]:
    """Every parameter name (older names included) that takes an integer, in any command."""
    return {name for c in CATALOGUE.values() for p in c.params if p.kind == "integer" for name in (p.name, *p.aliases)}


def _declares(command: Command, name: str) -> bool:
    return any(name == p.name or name in p.aliases for p in command.params)


def refuse_unstorable(label: str, text: str) -> None:
    """A request's text with a NUL character is refused: no message carries it, and PostgreSQL's
    jsonb (a job's parameters) cannot hold it. So is text UTF-8 cannot carry (a lone surrogate,
    which a slash command's JSON could hold as it can an HTTP body's): no engine stores it."""
    if "\x00" in text:
        raise bad_request(f"{label} must not contain a NUL character")
    if not utf8_encodable(text):
        raise bad_request(f"{label} must be text")


def _check(param: Param, name: str, value: Any) -> Any:
    """One parameter's value, checked (``name``: as the request spelled it)."""
    label = f"Required param {name}" if param.required else f"Param {name}"
    if param.kind == "image":
        return _check_image(param, name, label, value)
    if param.kind == "integer":
        if value is None:
            if param.required:
                raise bad_request(f"{label} is missing or empty")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not (
            (param.minimum is None or value >= param.minimum) and (param.maximum is None or value <= param.maximum)
        ):
            raise bad_request(f"{label} ({echo(value)}) must be an integer from {param.minimum} to {param.maximum}")
        return value
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{label} must be a string")
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if param.required:
            raise bad_request(f"{label} is missing or empty")
        return None
    if param.max_length is not None and len(text) > param.max_length:
        raise bad_request(f"{label} is longer than {param.max_length} characters")
    refuse_unstorable(label, text)
    if param.choices and text not in param.choices:
        raise bad_request(f"{label} ({echo(text)}) is not one of {', '.join(param.choices)}")
    return text


def _check_image(param: Param, name: str, label: str, value: Any) -> Image | None:
    if isinstance(value, str) and not value.strip():
        value = None  # an empty form field is an absent one
    if value is None or (isinstance(value, Image) and not value.data):
        if param.required:
            raise bad_request(f"{label} is missing or empty")
        return None
    if not isinstance(value, Image):
        raise bad_request(f"Param {name} must be a file: send it as a file part of a multipart/form-data body")
    if value.content_type is None:
        raise bad_request(f"Param {name} ({echo(value.filename)}) is not a PNG, JPEG or WEBP image")
    if value.size > IMAGE_LIMIT:
        raise too_large(name, value.filename)
    return value


_PROMPT = Param("prompt", "text", f"What the video shows (at most {PROMPT_LIMIT} characters)", required=True,
                max_length=PROMPT_LIMIT, pixverse="prompt")
_STYLE = Param("style", "text", "Realistic, Anime or 3D Animation", required=True, choices=STYLES, pixverse="style")
_ASPECT_RATIO = Param("aspect_ratio", "text", "Shape of the video (default 16:9)", choices=ASPECT_RATIOS,
                      pixverse="aspect_ratio")
_NEGATIVE_PROMPT = Param("negative_prompt", "text", "What the video should not show", max_length=PROMPT_LIMIT,
                         pixverse="negative_prompt")
_CHARACTER = Param("character", "text", "A character name (Anime only)", max_length=CHARACTER_LIMIT,
                   pixverse="character", requires=("style", "Anime"))
_SEED_VALUE = Param("seed_value", "integer", f"Seed for a repeatable result (0–{SEED_MAX})", minimum=0,
                    maximum=SEED_MAX, pixverse="seed_value", aliases=("seed",))

_IMAGE_NOTE = "PNG, JPEG or WEBP, at most 10 MB"

CATALOGUE: dict[Verb, Command] = {
    Verb.CREATE: Command(Verb.CREATE, "pixverse-create", "Create 4 PixVerse videos from a prompt",
                         (_PROMPT, _STYLE, _ASPECT_RATIO, _NEGATIVE_PROMPT, _CHARACTER), videos=4, replies="create"),
    Verb.CREATE_SINGLE: Command(Verb.CREATE_SINGLE, "pixverse-create-single", "Create one PixVerse video from a prompt",
                                (_PROMPT, _STYLE, _ASPECT_RATIO, _NEGATIVE_PROMPT, _CHARACTER, _SEED_VALUE),
                                videos=1, replies="create"),
    Verb.ANIMATE: Command(Verb.ANIMATE, "pixverse-animate", "Bring an image to life as a PixVerse video", (
        Param("image", "image", f"The image to animate ({_IMAGE_NOTE})", required=True, pixverse="image"),
        Param("prompt", "text", f"How it moves (at most {PROMPT_LIMIT} characters)", max_length=PROMPT_LIMIT,
              pixverse="prompt"),
        Param("motion", "integer", f"How much it moves, {MOTION_MIN}–{MOTION_MAX} (PixVerse's default 5)",
              minimum=MOTION_MIN, maximum=MOTION_MAX, pixverse="motion"),
        _SEED_VALUE,
        Param("hd_quality", "text", "Yes for HD quality", choices=YES_NO, pixverse="hd_quality"),
    ), videos=1, replies="animate"),
    Verb.MEME_FACE: Command(Verb.MEME_FACE, "pixverse-meme-face", "Put a face into a PixVerse video", (
        Param("face", "image", f"A picture of the face ({_IMAGE_NOTE})", required=True, pixverse="face"),
        _PROMPT, _NEGATIVE_PROMPT, _SEED_VALUE, _ASPECT_RATIO,
    ), videos=1, replies="meme_face"),
    Verb.BUTTON: Command(Verb.BUTTON, "pixverse-button", "Press a result button of a completed PixVerse job", (
        Param("jobid", "text", "The completed job's id", required=True),
        Param("button", "text", "U1–U4 upscale, V1–V4 variation, ReDo, 🔀", required=True, choices=BUTTONS),
    ), videos=1, replies=None),
}
# The names of PixVerse's parameters (a field no PixVerse command takes, such as useapi's
# `discord` or `maxJobs`, is left to the route; a button's own fields are not PixVerse options).
_PARAM_NAMES = frozenset(name for c in CATALOGUE.values() if c.verb is not Verb.BUTTON
                         for p in c.params for name in (p.name, *p.aliases))
