"""The aiohttp application: useapi.net's PixVerse v1 paths over the same core as the cogs.

Routes parse HTTP and call the account service and the dispatcher; every failure leaves
as the endpoint's JSON error model ``{"error", "code"}`` through one middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

from bot.accounts.service import AccountService
from bot.accounts.validation import echo, validate_channel_param
from bot.dispatch.catalogue import CATALOGUE, integer_fields
from bot.dispatch.images import IMAGE_LIMIT, Image, too_large
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import API_REQUESTER, Job, Verb
from bot.dispatch.validation import validate_reply
from bot.errors import INTERNAL_ERROR, ApiError, bad_request, from_exception, unauthorized
from bot.events import HTTP_BUSY, Events
from bot.web.openapi import openapi_document
from bot.web.server import REQUEST_TIMEOUT, UNSUPPORTED_ENCODING, request_protocol
from bot.store import TokenStore
from bot.text import utf8_encodable

if TYPE_CHECKING:
    from bot.metrics import Metrics

log = logging.getLogger(__name__)

PREFIX = "/v1/pixverse"
BODY_LIMIT = 64 * 1024
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, 405)
CONFIGURATION_NOT_FOUND = "Configuration not found. To create configuration use pixverse/account/channel."
NOT_CONNECTED = "The bot is not connected to Discord yet; try again in a moment"
API_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,200}")


@dataclass
class ApiContext:
    """What the routes need from the bot, as plain callables and services."""

    accounts: AccountService
    dispatcher: Dispatcher | None
    tokens: TokenStore
    # True when the channel (or thread) belongs to the server and the bot can see it; None
    # while the bot cannot tell yet (its gateway session has not loaded the servers).
    channel_visible: Callable[[str, str], Awaitable[bool | None]]
    # None when healthy, else the reason.
    health_problem: Callable[[], Awaitable[str | None]]
    # replyUrl may point at private or loopback addresses (REPLY_URL_ALLOW_PRIVATE).
    reply_allow_private: bool = False
    # Time allowed to send a request body (HTTP_REQUEST_TIMEOUT_SECONDS; the head has the same).
    request_timeout: float = 10.0
    # http.busy for each 429 (bot/events.py); None: no events.
    events: Events | None = None
    # GET /metrics and the request metrics (METRICS_ENABLED); None: off, /metrics is a 404.
    metrics: Metrics | None = None
    # METRICS_TOKEN: /metrics answers only "Authorization: Bearer <it>"; None: anyone who reaches it.
    metrics_token: str | None = None


CONTEXT = web.AppKey("context", ApiContext)
# The server of the request's API token, once guild_of found it (for http.busy). A typed key
# where aiohttp has them (3.12), a plain one before.
_REQUEST_KEY = getattr(web, "RequestKey", None)
GUILD: Any = _REQUEST_KEY("pixverse_guild_id", str) if _REQUEST_KEY is not None else "pixverse_guild_id"


def json_response(body: Any, status: int = 200) -> web.Response:
    text = json.dumps(body, ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in an answer: json_body refuses bodies holding one, but should
        # any reach an answer, it goes out escaped, still JSON, never aiohttp's text/plain 500.
        data = json.dumps(body).encode("ascii")
    return web.Response(body=data, status=status, content_type="application/json", charset="utf-8")


def error_response(error: ApiError) -> web.Response:
    response = json_response(error.to_dict(), status=error.code)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    if error.code == 408:
        response.force_close()  # the rest of that body is not worth waiting for
    return response


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error model for anything a route raised; a trace goes to the log, never out."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, ConnectionError):
        # The client went away mid-request (a body cut short): nobody is left to answer.
        log.debug("HTTP %s %s: the client disconnected (%s)", request.method, request.path[:200], type(exc).__name__)
        return error_response(ApiError(400, "Request body is malformed"))
    if isinstance(exc, (web.RequestPayloadError, HttpProcessingError)):
        # The body as sent cannot be read: the client's doing, never a 500.
        if isinstance(exc, ContentEncodingError) or isinstance(exc.__cause__, ContentEncodingError):
            encoding = echo(request.headers.get("Content-Encoding", ""))[:40]
            return error_response(ApiError(400, f"Request body does not decode as its Content-Encoding ({encoding}) says"))
        return error_response(ApiError(400, "Request body is malformed"))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(ApiError(413, f"Request body is larger than {BODY_LIMIT} bytes"))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response = error_response(ApiError(405, f"Method {request.method} is not allowed on {request.path}"))
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    if isinstance(exc, web.HTTPNotFound):
        return error_response(ApiError(404, f"Not found: {request.path[:200]}"))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return error_response(ApiError(exc.status, exc.reason))
    known = from_exception(exc)
    if known is not None:
        return error_response(known)
    log.error("HTTP %s %s failed", request.method, request.path, exc_info=exc)
    return error_response(ApiError(500, INTERNAL_ERROR))


@web.middleware
async def answer_and_log(request: web.Request, handler) -> web.StreamResponse:
    # One middleware for both jobs: every layer costs a coroutine on every request.
    started = time.perf_counter()
    connection = request_protocol(request)
    if connection is not None:
        connection.request_started()  # the head is in: its deadline no longer applies
    try:
        response = await handler(request)
    except Exception as exc:
        response = error_answer(request, exc)
    elapsed = time.perf_counter() - started
    # Method, path and status only: never headers (Authorization) or bodies (discord).
    log.debug("%s %s -> %s in %.1f ms", request.method, request.path[:200], response.status, elapsed * 1000)
    context = request.app[CONTEXT]
    if context.metrics is not None or (response.status == 429 and context.events is not None):
        route = route_template(request)
        if context.metrics is not None:
            context.metrics.observe_request(route, request.method, response.status, elapsed)
        if response.status == 429 and context.events is not None:
            retry_after = response.headers.get("Retry-After")
            context.events.emit(HTTP_BUSY, route=route, server=request.get(GUILD),
                                retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None)
    return response


def route_template(request: web.BaseRequest) -> str:
    """The route's canonical template (``/v1/pixverse/account/{channel}``), or ``unmatched`` when no
    route took the request (an unknown path, a wrong method): a label of bounded cardinality."""
    match_info = getattr(request, "match_info", None)
    resource = getattr(getattr(match_info, "route", None), "resource", None)
    return resource.canonical if resource is not None else UNMATCHED


async def guild_of(request: web.Request) -> str:
    """The server of the request's API token (``Authorization: Bearer <token>``); 401 otherwise."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not API_TOKEN.fullmatch(token):
        raise unauthorized()
    guild_id = await request.app[CONTEXT].tokens.guild_of(token)
    if guild_id is None:
        raise unauthorized()
    request[GUILD] = guild_id
    return guild_id


# A \uD800-\uDFFF escape: half of a surrogate pair, or a lone one (not Unicode text).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})


def check_encoding(request: web.Request) -> None:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise ApiError(415, UNSUPPORTED_ENCODING)


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded, within the time allowed; a slow body is a 408, not a held connection."""
    check_encoding(request)
    if request.content.is_eof():
        return await request.read()  # all there already (the usual small body): no timer to arm
    try:
        async with asyncio.timeout(request.app[CONTEXT].request_timeout):
            return await request.read()  # aiohttp refuses more than client_max_size: 413
    except TimeoutError:
        raise ApiError(408, REQUEST_TIMEOUT) from None


JSON = "application/json"
FORMS = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})


def unsupported_type(content_type: str) -> ApiError:
    return ApiError(415, f"Content-Type {echo(content_type)} is not supported: send application/json,"
                         " multipart/form-data or application/x-www-form-urlencoded")


async def request_body(request: web.Request, images: frozenset[str] = frozenset(), *,
                       guild_id: str | None = None) -> dict[str, Any]:
    """A POST's fields, from JSON or, as useapi's v1 clients send them, a form (``images``: the
    fields that take an image, read from a multipart body counted as ``guild_id``'s).

    In a form every value is text: an empty field counts as absent, and the numbers the API takes
    (``seed_value`` …; ``maxJobs`` has the seed's own rules for text) are read as numbers when written as one, so they
    meet the same rules as JSON numbers. Any other Content-Type is a 415."""
    content_type = request.content_type if request.headers.get("Content-Type") else ""
    if content_type == "application/x-www-form-urlencoded":
        raw = await read_body(request)  # kept by aiohttp: the form is parsed from it
        if raw.lstrip()[:1] == b"{":
            # curl -d '{"…"}' without -H 'Content-Type: application/json' says form but sends JSON.
            return json_object(raw)
        return await form_fields(request)
    if content_type == "multipart/form-data":
        check_encoding(request)
        if images:
            assert guild_id is not None, "an image body is counted as its server's"
            return await image_form_fields(request, images, guild_id)
        return await form_fields(request)  # parts streamed from the connection, within the limits
    if content_type not in ("", JSON) and not content_type.endswith("+json"):
        raise unsupported_type(content_type)
    return json_object(await read_body(request))


async def form_fields(request: web.Request) -> dict[str, Any]:
    try:
        async with asyncio.timeout(request.app[CONTEXT].request_timeout):
            form = await request.post()  # the body read above is reused; over client_max_size: 413
    except TimeoutError:
        raise ApiError(408, REQUEST_TIMEOUT) from None
    except web.HTTPException:
        raise  # 413: over the body limit
    except (ValueError, LookupError, RuntimeError, UnicodeError):  # a bad charset, transfer encoding, boundary
        raise bad_request("Request body is not a valid form") from None
    fields: dict[str, Any] = {}
    for name in form.keys():
        values = form.getall(name)
        if len(values) > 1:
            raise _repeated(name)
        value = values[0]
        if isinstance(value, (bytes, bytearray)):  # a part with no file name but a non-text type
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise _not_text(name) from None
        if not isinstance(value, str):
            raise _file_in_text_field(name)
        _keep_text(fields, name, value)
    return fields


def _keep_text(fields: dict[str, Any], name: str, value: str) -> None:
    """A form's text field as the API reads it: empty is absent, the numbers it takes as numbers.

    A name or value UTF-8 cannot carry is refused here: a form's charset is the client's to name,
    and some (utf-7, unicode_escape) make lone surrogates, which would fail later, deep in hashing,
    the database or the answer's encoding (JSON bodies are checked in ``json_object``)."""
    if not utf8_encodable(name):
        raise bad_request("Request body is not a valid form")
    if not utf8_encodable(value):
        raise _not_text(name)
    if value.strip():
        fields[name] = int(value) if name in INTEGER_FIELDS and _INTEGER_TEXT.fullmatch(value.strip()) else value


def _repeated(name: str) -> ApiError:
    return bad_request(f"Param {echo(name)} is given more than once")


def _file_in_text_field(name: str) -> ApiError:
    return bad_request(f"Param {echo(name)} must be a text field, not a file")


def _not_text(name: str) -> ApiError:
    return bad_request(f"Param {echo(name)} must be text")


async def image_form_fields(request: web.Request, images: frozenset[str], guild_id: str) -> dict[str, Any]:
    """A multipart body that may carry images (``images``: the parameters that take one), read part
    by part: the text fields within BODY_LIMIT together, each image within IMAGE_LIMIT. Nothing
    beyond those is kept in memory; an image over its limit is refused as soon as it is seen."""
    idle = request.app[CONTEXT].request_timeout
    try:
        # An image takes time on a slow uplink: the whole body gets IMAGE_BODY_SECONDS, but a body
        # that stops coming for the request timeout is cut (slowloris). At most IMAGE_BODIES_AT_ONCE
        # are read at once, so images never hold more than that many times 10 MB, and at most
        # IMAGE_BODIES_PER_SERVER of them one server's.
        async with asyncio.timeout(IMAGE_BODY_SECONDS):
            async with request.app[IMAGE_BODIES].reading(guild_id):
                return await _read_image_form(request, images, idle)
    except TimeoutError:
        raise ApiError(408, REQUEST_TIMEOUT) from None
    except (ApiError, web.HTTPException):
        raise
    except (ValueError, LookupError, RuntimeError, UnicodeError, AssertionError):  # a bad boundary, charset, part
        raise bad_request("Request body is not a valid form") from None


async def _read_image_form(request: web.Request, images: frozenset[str], idle: float) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    text_bytes = 0
    reader = await request.multipart()
    while (part := await asyncio.wait_for(reader.next(), idle)) is not None:
        if not isinstance(part, BodyPartReader) or not part.name:
            raise bad_request("Request body is not a valid form")
        name = part.name
        # Names and file names count with the text: many parts or long names are no way around it.
        text_bytes += len(name) + len(part.filename or "")
        if len(seen) >= FORM_PARTS or text_bytes > BODY_LIMIT:
            raise _too_many_parts()
        if name in seen:
            raise _repeated(name)
        seen.add(name)
        if part.filename is not None:
            if name not in images:
                raise _file_in_text_field(name)
            data = bytearray()
            while chunk := await asyncio.wait_for(part.read_chunk(256 * 1024), idle):
                data += chunk
                if len(data) > IMAGE_LIMIT:
                    raise too_large(echo(name), part.filename)
            fields[name] = Image.given(part.filename, bytes(data))
            continue
        raw = bytearray()
        while chunk := await asyncio.wait_for(part.read_chunk(16 * 1024), idle):
            raw += chunk
            text_bytes += len(chunk)
            if text_bytes > BODY_LIMIT:
                raise _too_many_parts()
        try:
            value = part.decode(bytes(raw)).decode(part.get_charset(default="utf-8"))
        except UnicodeDecodeError:
            raise _not_text(name) from None
        _keep_text(fields, name, value)
    return fields


def _too_many_parts() -> ApiError:
    return ApiError(413, f"Request body has more than {FORM_PARTS} parts or {BODY_LIMIT} bytes beside its images")


# A multipart body with images: at most this many parts, the whole body within this long (each
# read within the request timeout), and this many such bodies read at once per process.
FORM_PARTS = 32
IMAGE_BODY_SECONDS = 300.0
IMAGE_BODIES_AT_ONCE = 4
IMAGE_BODIES_PER_SERVER = 2


class ImageBodies:
    """The multipart bodies with images being read: at most ``at_once`` in the process, and at most
    ``per_server`` of them one server's (its API token's), so that one server's slow uploads, which
    may trickle for IMAGE_BODY_SECONDS, hold back its own later uploads, never every server's.
    Others wait their turn, within the body's time. A server's entry lives while it has a body
    being read or waiting: as many as the connections, never more."""

    def __init__(self, at_once: int = IMAGE_BODIES_AT_ONCE, per_server: int = IMAGE_BODIES_PER_SERVER) -> None:
        self._all = asyncio.Semaphore(at_once)
        self._per_server = per_server
        self._servers: dict[str, tuple[asyncio.Semaphore, int]] = {}  # server -> (its share, bodies in or waiting)
        self.reading_now = 0

    @property
    def servers(self) -> int:
        """The servers with a body being read or waiting."""
        return len(self._servers)

    def of(self, guild_id: str) -> int:
        """The server's bodies being read or waiting."""
        return self._servers.get(guild_id, (None, 0))[1]

    @contextlib.asynccontextmanager
    async def reading(self, guild_id: str) -> AsyncIterator[None]:
        share, users = self._servers.get(guild_id) or (asyncio.Semaphore(self._per_server), 0)
        self._servers[guild_id] = (share, users + 1)
        try:
            async with share, self._all:
                self.reading_now += 1
                try:
                    yield
                finally:
                    self.reading_now -= 1
        finally:
            share, users = self._servers[guild_id]
            if users == 1:
                del self._servers[guild_id]
            else:
                self._servers[guild_id] = (share, users - 1)


IMAGE_BODIES = web.AppKey("image_bodies", ImageBodies)


# Fields that are numbers in JSON: in a form they arrive as text.
INTEGER_FIELDS = frozenset(integer_fields())  # maxJobs: the seed's own rules read numeric text already
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


def json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        # Strict UTF-8 (RFC 8259; a leading BOM is allowed to be ignored, and is): json.loads
        # would decode bytes with surrogatepass, letting encoded surrogates through. NaN and
        # Infinity are Python's extensions, not JSON.
        body = json.loads(raw.decode("utf-8-sig"), parse_constant=_not_json)
        if _SURROGATE_ESCAPE.search(raw):
            # Escaped pairs decode to one character; a lone half would fail later, deep in
            # hashing, SQLite or the answer's encoding: refuse the body now.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):  # RecursionError: absurd nesting
        raise bad_request("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    return body


def query_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_request(f"Required param {name} is given more than once")
    return values[0] if values else None


def reply_params(request: web.Request, body: dict[str, Any]) -> dict[str, str]:
    return validate_reply(body, allow_private=request.app[CONTEXT].reply_allow_private)


def dispatcher_of(request: web.Request) -> Dispatcher:
    dispatcher = request.app[CONTEXT].dispatcher
    if dispatcher is None:
        raise ApiError(503, "Jobs are not available right now")
    return dispatcher


# --- accounts --------------------------------------------------------------------------


async def post_account(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    body = await request_body(request)
    ctx = request.app[CONTEXT]
    path_channel = request.match_info["channel"]
    account_request = await ctx.accounts.prepare(body, path_channel=path_channel, guild_id=guild_id)
    visible = await ctx.channel_visible(guild_id, account_request.channel)
    if visible is None:
        # Not "your channel is wrong": the bot does not know its servers' channels yet.
        raise ApiError(503, NOT_CONNECTED)
    if not visible:
        raise bad_request(
            f"Required param channel ({echo(account_request.channel)}) is not a channel of this Discord server"
            " that the bot can see"
        )
    await ctx.accounts.save(account_request)
    return web.Response(status=204)


async def configurations(coro: Awaitable[Any]) -> Any:
    """An account-service call, with the useapi account paths' own 404 text."""
    try:
        return await coro
    except ApiError as exc:
        if exc.code == 404:
            raise ApiError(404, CONFIGURATION_NOT_FOUND) from None
        raise


async def get_accounts(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    configs = await configurations(request.app[CONTEXT].accounts.list(guild_id))
    return json_response({config.channel_id: config.to_public() for config in configs})


async def get_account(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    channel = validate_channel_param(request.match_info["channel"])
    config = await configurations(request.app[CONTEXT].accounts.get(guild_id, channel))
    return json_response(config.to_public())


async def delete_account(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    channel = validate_channel_param(request.match_info["channel"])
    await configurations(request.app[CONTEXT].accounts.delete(guild_id, channel))
    return web.Response(status=204)


# --- jobs ------------------------------------------------------------------------------


async def public_job(request: web.Request, job: Job, **extra: Any) -> web.Response:
    public = await dispatcher_of(request).public_job(job, with_reply=True)
    return json_response({**public, **extra})


def _create(verb: Verb):
    images = frozenset(p.name for p in CATALOGUE[verb].images)

    async def handler(request: web.Request) -> web.Response:
        guild_id = await guild_of(request)
        body = await request_body(request, images, guild_id=guild_id)
        dispatcher = dispatcher_of(request)
        placed = await dispatcher.submit(
            guild_id=guild_id, requester_id=API_REQUESTER, request_channel_id=API_REQUESTER, verb=verb, body=body,
            extra=reply_params(request, body), named_account=True,
        )
        extra = {} if placed.queue_position is None else {"queuePosition": placed.queue_position}
        return await public_job(request, placed.job, **extra)

    return handler


async def post_button(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    body = await request_body(request)
    job = await dispatcher_of(request).press(
        guild_id=guild_id, requester_id=API_REQUESTER, request_channel_id=API_REQUESTER,
        job_id=body.get("jobid"), button=body.get("button"), extra=reply_params(request, body),
        prompt=body.get("prompt"), account_token=body.get("discord"),
        is_manager=True,  # an API token is the server's own credential, made by a manager
    )
    return await public_job(request, job)


async def get_jobs(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    dispatcher = dispatcher_of(request)
    jobid = query_param(request, "jobid")
    if jobid is not None or request.path.endswith("/"):
        public = await dispatcher.public_job_by_id(required_jobid(jobid), guild_id, with_reply=True)
        return json_response(public)
    return json_response([job.job_id for job in await dispatcher.executing(guild_id)])


def required_jobid(value: str | None) -> str:
    if value is None or not value.strip():
        raise bad_request("Query param jobid not provided")  # useapi's text
    return value


async def cancel_job(request: web.Request) -> web.Response:
    guild_id = await guild_of(request)
    # An API token acts for its server: like a Manage Server member, it may cancel any job.
    job = await dispatcher_of(request).cancel(
        required_jobid(query_param(request, "jobid")), guild_id=guild_id, user_id=API_REQUESTER, is_manager=True
    )
    return json_response({"jobid": job.job_id, "status": job.status.value, "code": 200})  # useapi's answer


# --- service ---------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    problem = await request.app[CONTEXT].health_problem()
    if problem is not None:
        return json_response({"status": "unavailable", "error": problem, "code": 503}, status=503)
    return json_response({"status": "ok", "code": 200})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text format (only routed with METRICS_ENABLED=true); with METRICS_TOKEN, for
    ``Authorization: Bearer <METRICS_TOKEN>`` only, compared in constant time."""
    context = request.app[CONTEXT]
    assert context.metrics is not None
    if context.metrics_token is not None:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"),
                                                                  context.metrics_token.encode("utf-8")):
            raise unauthorized()
    body = await context.metrics.render()
    return web.Response(body=body, headers={"Content-Type": context.metrics.content_type})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[CONTEXT].accounts.max_concurrent_jobs))


ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", PREFIX + "/account/{channel}", post_account),
    ("GET", PREFIX + "/account", get_accounts),
    ("GET", PREFIX + "/account/{channel}", get_account),
    ("DELETE", PREFIX + "/account/{channel}", delete_account),
    ("POST", PREFIX + "/create", _create(Verb.CREATE)),
    ("POST", PREFIX + "/create_single", _create(Verb.CREATE_SINGLE)),
    ("POST", PREFIX + "/animate", _create(Verb.ANIMATE)),
    ("POST", PREFIX + "/meme_face", _create(Verb.MEME_FACE)),
    ("POST", PREFIX + "/button", post_button),
    ("GET", PREFIX + "/jobs", get_jobs),
    ("GET", PREFIX + "/jobs/", get_jobs),
    ("GET", PREFIX + "/jobs/cancel", cancel_job),
    ("GET", PREFIX + "/jobs/cancel/", cancel_job),
    ("GET", "/healthz", healthz),
    ("GET", "/openapi.json", openapi),
]


# GET only because useapi.net's paths are: HEAD must stay safe (link checkers and proxies
# send it), so these answer HEAD with 405 instead of cancelling a job.
NOT_SAFE = {cancel_job}


async def errors_as_json(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The last net: an error aiohttp answers by itself, outside the middleware (an unknown
    ``Expect``, 417), leaves as the API's JSON too."""
    if response.status < 400 or not isinstance(response, web.Response):
        return
    if response.content_type == "application/json":
        return
    body = json.dumps({"error": response.reason or "Error", "code": response.status}).encode()
    response.body = body
    if "Content-Length" in response.headers:  # aiohttp counted the old text before this hook
        response.headers["Content-Length"] = str(len(body))
    response.content_type = "application/json"
    response.charset = "utf-8"


def create_app(context: ApiContext) -> web.Application:
    app = web.Application(client_max_size=BODY_LIMIT, middlewares=[answer_and_log])
    app[CONTEXT] = context
    app[IMAGE_BODIES] = ImageBodies()
    app.on_response_prepare.append(errors_as_json)
    for method, path, handler in ROUTES:
        if method == "GET" and handler not in NOT_SAFE:
            app.router.add_get(path, handler)  # HEAD as well, as HTTP requires
        else:
            app.router.add_route(method, path, handler)
    if context.metrics is not None:
        # Not one of the API's documented paths (ROUTES, OpenAPI): off, it is a 404 like any other.
        app.router.add_get(METRICS_PATH, metrics)
    return app


METRICS_PATH = "/metrics"
