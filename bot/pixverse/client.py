"""Acts on Discord as an account's user: finds PixVerse's slash commands, runs them, presses buttons.

This is parts 2 and 3 of ``/work/shared/pixverse-protocol.md``: Discord's user API as the
open-source Midjourney proxies use it. Every request is sent with the account's Discord user
token, raw in ``Authorization``. That token is a full-access credential: it never appears in
an exception's text or repr, nor in a log line (lines name the route template, such as
``POST /interactions``, and the status code only). Exceptions are raised ``from None`` so that
no aiohttp exception (some carry the request headers) travels along with ours.

Requests of one account (one token) are paced: at least ``submit_interval`` seconds apart, plus
up to 20% random jitter, enforced with a per-token lock so concurrent callers queue. Different
tokens never wait for each other.

Image options (type 11, ``animate`` and ``meme_face``) take an :class:`UploadFile` (or any object
with ``filename: str`` and ``data: bytes``): the client asks Discord for upload slots with the
token, ``PUT``s the bytes to each signed ``upload_url`` *without* the token, and refers to the
uploads from the interaction (protocol part 3). An upload URL's query string is a signature: it
is never logged nor put in an exception's text either.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import logging
import mimetypes
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import yarl

from bot.accounts.token_check import TOKEN_CHARS

log = logging.getLogger(__name__)

PIXVERSE_APP_NAME = "PixVerse"
DISCORD_EPOCH_MS = 1420070400000

INTERACTIONS = "/interactions"
ROUTE_INTERACTIONS = "POST /interactions"
ROUTE_COMMAND_INDEX = "GET /guilds/{guild}/application-command-index"
ROUTE_ATTACHMENTS = "POST /channels/{channel}/attachments"
ROUTE_UPLOAD = "PUT upload_url"  # never the URL itself: its query string is a signature

# Largest image this client uploads for an attachment option, refused before anything is sent.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# The PUT of up to MAX_UPLOAD_BYTES gets at least this long, whatever the request timeout.
_UPLOAD_TIMEOUT = 120.0

# Application-command option types this client knows how to send.
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11
_SNOWFLAKE_OPTION_TYPES = {6, 7, 8, 9}  # user, channel, role, mentionable: ids as strings

# Discord JSON error codes.
UNKNOWN_APPLICATION_COMMAND = 10063
INVALID_FORM_BODY = 50035

# A token is printable ASCII without spaces; anything else must not reach an HTTP header.
_TOKEN_CHARS = TOKEN_CHARS
_JITTER = 0.2
_BACKOFF_CAP = 8.0
_DEFAULT_RETRY_AFTER = 1.0


class PixverseClientError(Exception):
    """Discord refused or failed a request; ``str()`` is the reason, never a token.

    ``status`` is the HTTP status when Discord answered (``None`` otherwise), ``code`` the
    JSON error code Discord gave, if any.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r})"


class AccountRejected(PixverseClientError):
    """401/403 on a user-token request: the token is dead or the account is blocked."""

    status: int

    def __init__(self, message: str, *, status: int, code: int | None = None) -> None:
        super().__init__(message, status=status, code=code)


class CommandUnavailable(PixverseClientError):
    """PixVerse, or the command, is not in the server's command index (or stayed stale after one refetch)."""


class DiscordUnavailable(PixverseClientError):
    """5xx, network errors, timeouts or 429 still failing after the bounded retries."""


@dataclass(frozen=True, repr=False)
class UploadFile:
    """An image for an attachment option: its file name and its bytes.

    Any object with ``filename: str`` and ``data: bytes`` attributes is accepted as well.
    """

    filename: str
    data: bytes

    def __repr__(self) -> str:  # never the bytes
        return f"UploadFile(filename={self.filename!r}, size={len(self.data)})"


class _Retry(Exception):
    """Internal: one attempt failed in a way that is worth another attempt."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def _token_key(token: str) -> str:
    """What the per-account state is keyed by, so the client's own attributes hold no token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _discord_reason(body: Any) -> str:
    """Discord's ``message`` plus the first nested form errors, as one readable line."""
    if not isinstance(body, dict):
        return ""
    reason = str(body.get("message") or "").strip()
    details: list[str] = []

    def walk(node: Any, path: str) -> None:
        if len(details) >= 3 or not isinstance(node, dict):
            return
        for err in node.get("_errors", []) if isinstance(node.get("_errors"), list) else []:
            if isinstance(err, dict) and err.get("message"):
                details.append(f"{path or 'body'}: {err['message']}")
        for key, child in node.items():
            if key != "_errors":
                walk(child, f"{path}.{key}" if path else str(key))

    walk(body.get("errors"), "")
    if details:
        reason = f"{reason} ({'; '.join(details[:3])})" if reason else "; ".join(details[:3])
    return reason


def _error_code(body: Any) -> int | None:
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _is_stale_command(body: Any) -> bool:
    """Whether a 400 says the command object we sent is unknown or outdated."""
    if not isinstance(body, dict):
        return False
    code = body.get("code")
    message = str(body.get("message") or "").lower()
    if code == UNKNOWN_APPLICATION_COMMAND:
        return True
    if "outdated" in message or ("unknown" in message and "command" in message):
        return True
    errors = body.get("errors")
    if code == INVALID_FORM_BODY and isinstance(errors, dict):
        data_errors = errors.get("data")
        if isinstance(data_errors, dict):
            if {"version", "id", "application_command"} & data_errors.keys():
                return True
            text = json.dumps(data_errors).lower()
            markers = ("version", "outdated", "unknown_command", "unknown application command")
            if any(marker in text for marker in markers):
                return True
    return False


def _retry_after(body: Any, headers: Mapping[str, str]) -> float:
    """Seconds a 429 asks us to wait: JSON ``retry_after``, else ``Retry-After``, else a second."""
    candidates: list[Any] = []
    if isinstance(body, dict):
        candidates.append(body.get("retry_after"))
    candidates += [headers.get("Retry-After"), headers.get("X-RateLimit-Reset-After")]
    for value in candidates:
        if value is None or isinstance(value, bool):
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue  # for example an HTTP date in Retry-After
        if seconds == seconds and seconds >= 0:  # not NaN
            return seconds
    return _DEFAULT_RETRY_AFTER


class DiscordUserClient:
    """Discord's user API for PixVerse, one instance shared by every account.

    ``sleep``, ``rng`` and ``clock`` are injectable so that tests run fast and deterministic.
    """

    # A 429 asking for a longer wait than this fails at once instead of holding the job.
    max_retry_after = 60.0

    def __init__(
        self,
        api_base_url: str,
        *,
        application_id: str | None = None,
        submit_interval: float = 2.0,
        max_attempts: int = 4,
        timeout: float = 15.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._application_id = str(application_id) if application_id else None
        self._interval = max(0.0, float(submit_interval))
        self._max_attempts = max(1, int(max_attempts))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        # Per account (keyed by a hash of the token): queue, last request time, 429 hold.
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_request: dict[str, float] = {}
        self._not_before: dict[str, float] = {}
        # Per server: the command index as Discord answered it.
        self._index: dict[str, dict[str, Any]] = {}
        self._index_locks: dict[str, asyncio.Lock] = {}
        self._counter = itertools.count()

    def __repr__(self) -> str:
        return f"DiscordUserClient({self._base!r}, application_id={self._application_id!r})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> DiscordUserClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # ------------------------------------------------------------------ ids

    def _nonce(self) -> str:
        """A new snowflake string: milliseconds since Discord's epoch, then a counter."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((millis << 22) | (next(self._counter) & 0xFFF))

    @staticmethod
    def _session_id() -> str:
        return secrets.token_hex(16)

    # ------------------------------------------------------------------ transport

    async def _pace(self, key: str) -> None:
        """Waits until this account may send again; the caller holds the account's lock."""
        due = self._not_before.get(key, float("-inf"))
        last = self._last_request.get(key)
        if last is not None and self._interval > 0:
            jitter = self._rng.uniform(0.0, _JITTER * self._interval)
            due = max(due, last + self._interval + jitter)
        wait = due - self._clock()
        if wait > 0:
            await self._sleep(wait)
        self._last_request[key] = self._clock()

    async def _request(
        self, token: str, method: str, path: str, route: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One paced request with the bounded retries; returns ``(status, JSON or None)``.

        2xx and the 4xx other than 401/403/429 are returned for the caller to interpret.
        """
        if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
            raise AccountRejected("The account's token has characters a Discord token never has", status=401)
        key = _token_key(token)
        lock = self._locks.setdefault(key, asyncio.Lock())
        headers = {"Authorization": token, "Content-Type": "application/json"}
        url = self._base + path
        last_reason, last_status = "", None
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with lock:
                    await self._pace(key)
                    status, data, answer_headers = await self._exchange(method, url, route, headers, body)
                    if status == 429:
                        wait = _retry_after(data, answer_headers)
                        if wait > self.max_retry_after:
                            log.warning("%s answered 429 asking to wait %.1f s; giving up", route, wait)
                            raise DiscordUnavailable(
                                f"Discord is rate limiting this account on {route} for {wait:.0f} s; try again later",
                                status=429,
                            )
                        # The whole account waits, including callers queued behind this one.
                        self._not_before[key] = self._clock() + wait
                        raise _Retry(f"rate limited (429, retry after {wait:g} s)", 429, wait)
            except _Retry as retry:
                last_reason, last_status = retry.reason, retry.status
                if attempt >= self._max_attempts:
                    break
                if retry.retry_after is not None:
                    log.warning(
                        "%s answered 429; retrying in %.2f s (attempt %d/%d)",
                        route, retry.retry_after, attempt, self._max_attempts,
                    )
                    continue  # _pace waits until the account's hold is over
                delay = min(2.0 ** (attempt - 1), _BACKOFF_CAP)
                log.warning(
                    "%s failed: %s; retrying in %.0f s (attempt %d/%d)",
                    route, retry.reason, delay, attempt, self._max_attempts,
                )
                await self._sleep(delay)
                continue
            if status in (401, 403):
                reason = _discord_reason(data)
                log.warning("%s answered %d: the account's token was rejected", route, status)
                raise AccountRejected(
                    f"Discord rejected the account's token ({status} on {route}"
                    + (f": {reason}" if reason else "")
                    + "): the token is invalid or the account is blocked",
                    status=status,
                    code=_error_code(data),
                )
            return status, data
        log.warning("%s gave up after %d attempts: %s", route, self._max_attempts, last_reason)
        raise DiscordUnavailable(
            f"Discord could not be reached for {route} after {self._max_attempts} attempts (last: {last_reason})",
            status=last_status,
        )

    async def _exchange(
        self, method: str, url: str, route: str, headers: dict[str, str], body: dict[str, Any] | None
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Sends once: status, JSON (or None) and headers; :class:`_Retry` on 5xx, network errors, timeouts."""
        try:
            async with self._client().request(method, url, headers=headers, json=body) as resp:
                status = resp.status
                answer_headers = resp.headers.copy()
                raw = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # Only the type: aiohttp exceptions may carry the request (and its headers).
            log.debug("%s: %s", route, type(exc).__name__)
            raise _Retry(type(exc).__name__) from None
        log.debug("%s -> %d", route, status)
        data: Any = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
        if status >= 500:
            raise _Retry(f"HTTP {status}", status)
        return status, data, answer_headers

    @staticmethod
    def _other_error(status: int, data: Any, route: str) -> PixverseClientError:
        reason = _discord_reason(data)
        return PixverseClientError(
            f"Discord answered {status} to {route}" + (f": {reason}" if reason else ""),
            status=status,
            code=_error_code(data),
        )

    # ------------------------------------------------------------------ the command index

    async def _fetch_index(self, token: str, guild_id: str, *, refresh: bool) -> tuple[dict[str, Any], bool]:
        """The server's command index and whether it was fetched just now (``False``: cached)."""
        lock = self._index_locks.setdefault(guild_id, asyncio.Lock())
        async with lock:
            cached = self._index.get(guild_id)
            if cached is not None and not refresh:
                return cached, False
            path = f"/guilds/{quote(str(guild_id), safe='')}/application-command-index"
            status, data = await self._request(token, "GET", path, ROUTE_COMMAND_INDEX)
            if not 200 <= status < 300:
                raise self._other_error(status, data, ROUTE_COMMAND_INDEX)
            if not isinstance(data, dict):
                raise DiscordUnavailable(
                    f"Discord answered {ROUTE_COMMAND_INDEX} with something that is not a command index",
                    status=status,
                )
            self._index[guild_id] = data
            return data, True

    def _app_id_in(self, index: dict[str, Any], guild_id: str) -> str:
        if self._application_id:
            return self._application_id
        apps = index.get("applications")
        matches = {
            str(app.get("id"))
            for app in (apps if isinstance(apps, list) else [])
            if isinstance(app, dict)
            and isinstance(app.get("name"), str)
            and app["name"].casefold() == PIXVERSE_APP_NAME.casefold()
            and app.get("id") is not None
        }
        if not matches:
            raise CommandUnavailable(
                f"PixVerse is not in server {guild_id}: no application named {PIXVERSE_APP_NAME} in its command index"
            )
        if len(matches) > 1:
            raise CommandUnavailable(
                f"Server {guild_id} has {len(matches)} applications named {PIXVERSE_APP_NAME}; "
                "set PIXVERSE_APPLICATION_ID to the real one"
            )
        return matches.pop()

    def _command_in(self, index: dict[str, Any], guild_id: str, name: str) -> dict[str, Any]:
        app_id = self._app_id_in(index, guild_id)
        commands = index.get("application_commands")
        for cmd in commands if isinstance(commands, list) else []:
            if (
                isinstance(cmd, dict)
                and str(cmd.get("application_id")) == app_id
                and cmd.get("name") == name
                and cmd.get("type", 1) == 1
                and cmd.get("id") is not None
            ):
                return copy.deepcopy(cmd)
        raise CommandUnavailable(f"PixVerse (application {app_id}) has no /{name} command in server {guild_id}")

    async def pixverse_application_id(self, token: str, guild_id: str) -> str:
        """PixVerse's application id: the setting, else found by name in the server's index."""
        if self._application_id:
            return self._application_id
        index, fetched = await self._fetch_index(token, guild_id, refresh=False)
        try:
            return self._app_id_in(index, guild_id)
        except CommandUnavailable:
            if fetched:
                raise
        index, _ = await self._fetch_index(token, guild_id, refresh=True)
        return self._app_id_in(index, guild_id)

    async def command(self, token: str, guild_id: str, name: str, *, refresh: bool = False) -> dict:
        """PixVerse's command object ``name`` from the server's index (a copy; cached per server).

        Only commands of PixVerse's application count: another bot's command of the same name
        is never used. A command missing from a cached index gets one refetch before
        :class:`CommandUnavailable`.
        """
        index, fetched = await self._fetch_index(token, guild_id, refresh=refresh)
        try:
            return self._command_in(index, guild_id, name)
        except CommandUnavailable:
            if fetched:
                raise
        index, _ = await self._fetch_index(token, guild_id, refresh=True)
        return self._command_in(index, guild_id, name)

    # ------------------------------------------------------------------ slash commands

    @staticmethod
    def _typed_options(
        command: dict[str, Any], options: Mapping[str, object]
    ) -> tuple[list[dict[str, Any]], list[UploadFile]]:
        """The ``data.options`` list (caller's order, types from the command's definitions) and
        the images to upload.

        An attachment option's value is the id of its upload, ``"0"``, ``"1"``... in option order;
        the images come back in that order (image ``i`` has id ``str(i)``). Every check is done
        here, before anything is uploaded or submitted.
        """
        name = command.get("name")
        definitions = {
            d["name"]: d for d in command.get("options") or [] if isinstance(d, dict) and isinstance(d.get("name"), str)
        }
        result: list[dict[str, Any]] = []
        files: list[UploadFile] = []
        for option_name, value in options.items():
            if value is None:
                continue
            definition = definitions.get(option_name)
            if definition is None:
                known = ", ".join(definitions) or "none"
                raise CommandUnavailable(
                    f"PixVerse's /{name} has no option '{option_name}' (its options: {known})"
                )
            option_type = definition.get("type")
            typed = _typed_value(name, option_name, option_type, value)
            if isinstance(typed, UploadFile):
                files.append(typed)
                typed = str(len(files) - 1)
            result.append({"type": option_type, "name": option_name, "value": typed})
        given = {o["name"] for o in result}
        missing = [n for n, d in definitions.items() if d.get("required") and n not in given]
        if missing:
            raise PixverseClientError(f"PixVerse's /{name} needs the option(s) {', '.join(missing)}")
        return result, files

    def _interaction_body(
        self,
        command: dict[str, Any],
        guild_id: str,
        channel_id: str,
        typed_options: list[dict[str, Any]],
        attachments: list[dict[str, str]],
    ) -> dict[str, Any]:
        return {
            "type": 2,
            "application_id": str(command["application_id"]),
            "guild_id": guild_id,
            "channel_id": channel_id,
            "session_id": self._session_id(),
            "nonce": self._nonce(),
            "data": {
                "version": command.get("version"),
                "id": command["id"],
                "name": command["name"],
                "type": 1,
                "options": typed_options,
                "application_command": command,
                "attachments": attachments,
            },
        }

    async def _prepare(
        self, token: str, command: dict[str, Any], guild_id: str, channel_id: str, options: Mapping[str, object]
    ) -> dict[str, Any]:
        """The interaction's body for ``command``, its images uploaded first (if it has any)."""
        typed_options, files = self._typed_options(command, options)
        attachments = await self._upload(token, channel_id, command.get("name"), files) if files else []
        return self._interaction_body(command, guild_id, channel_id, typed_options, attachments)

    async def run_command(
        self, token: str, *, guild_id: str, channel_id: str, name: str, options: dict[str, object]
    ) -> str:
        """Runs PixVerse's ``/name`` in the channel as the account; returns the interaction's nonce.

        An attachment option (type 11) takes an :class:`UploadFile` (or any object with
        ``filename`` and ``data``); it is uploaded to the channel first (see :meth:`_upload`).

        A 400 saying the command is unknown or outdated refetches the server's index once and
        submits again; a 400 after that is :class:`CommandUnavailable`.
        """
        command = await self.command(token, guild_id, name)
        body = await self._prepare(token, command, guild_id, channel_id, options)
        status, data = await self._request(token, "POST", INTERACTIONS, ROUTE_INTERACTIONS, body)
        if 200 <= status < 300:
            return body["nonce"]
        if status != 400 or not _is_stale_command(data):
            raise self._other_error(status, data, ROUTE_INTERACTIONS)

        log.info("%s answered 400 (stale /%s); refetching the command index once", ROUTE_INTERACTIONS, name)
        command = await self.command(token, guild_id, name, refresh=True)
        # The images are uploaded again rather than reused: the refetched command may declare
        # its options differently (other names, order, a second image), the refused interaction
        # may or may not have consumed the first upload slots, and the rare stale path is not
        # worth an upload that Discord might no longer accept.
        body = await self._prepare(token, command, guild_id, channel_id, options)
        status, data = await self._request(token, "POST", INTERACTIONS, ROUTE_INTERACTIONS, body)
        if 200 <= status < 300:
            return body["nonce"]
        if status == 400:
            reason = _discord_reason(data)
            raise CommandUnavailable(
                f"PixVerse's /{name} was refused again after refetching the command index"
                + (f": {reason}" if reason else ""),
                status=status,
                code=_error_code(data),
            )
        raise self._other_error(status, data, ROUTE_INTERACTIONS)

    # ------------------------------------------------------------------ images (attachment options)

    async def _upload(
        self, token: str, channel_id: str, command_name: Any, files: list[UploadFile]
    ) -> list[dict[str, str]]:
        """Uploads ``files`` to the channel; returns ``data.attachments`` (file ``i`` has id ``str(i)``).

        One ``POST /channels/{C}/attachments`` with the token asks for a slot per file, then each
        file's bytes are ``PUT`` to its slot's signed ``upload_url`` without the token.
        """
        ids = [str(i) for i in range(len(files))]
        request = {
            "files": [{"filename": f.filename, "file_size": len(f.data), "id": i} for i, f in zip(ids, files)]
        }
        path = f"/channels/{quote(str(channel_id), safe='')}/attachments"
        status, data = await self._request(token, "POST", path, ROUTE_ATTACHMENTS, request)
        if not 200 <= status < 300:
            raise self._other_error(status, data, ROUTE_ATTACHMENTS)
        slots = _upload_slots(data, ids)
        attachments: list[dict[str, str]] = []
        for attachment_id, file, (upload_url, upload_filename) in zip(ids, files, slots):
            await self._put_upload(upload_url, file, command_name)
            attachments.append({"id": attachment_id, "filename": file.filename, "uploaded_filename": upload_filename})
        return attachments

    async def _put_upload(self, upload_url: str, file: UploadFile, command_name: Any) -> None:
        """``PUT``s one file's bytes to its signed upload URL, with bounded retries on 5xx and network errors.

        No ``Authorization`` header: the URL is a storage host's, signed by Discord, and the token
        must never reach it. Logs and errors name the host only, never the URL's query string.
        """
        host = urlsplit(upload_url).hostname or "?"
        what = f"the upload of {file.filename!r} for PixVerse's /{command_name} (to {host})"
        content_type = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
        timeout = aiohttp.ClientTimeout(total=max(self._timeout.total or 0.0, _UPLOAD_TIMEOUT))
        url = yarl.URL(upload_url, encoded=True)  # the signed query string exactly as given
        last_reason, last_status = "", None
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with self._client().put(
                    url, data=file.data, headers={"Content-Type": content_type}, timeout=timeout
                ) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Only the type: aiohttp exceptions carry the URL, signature included.
                last_reason, last_status = type(exc).__name__, None
            else:
                log.debug("%s (%s) -> %d", ROUTE_UPLOAD, host, status)
                if 200 <= status < 300:
                    return
                if status < 500:
                    log.warning("%s (%s) answered %d", ROUTE_UPLOAD, host, status)
                    raise PixverseClientError(f"The storage host refused {what}: HTTP {status}", status=status)
                last_reason, last_status = f"HTTP {status}", status
            if attempt >= self._max_attempts:
                break
            delay = min(2.0 ** (attempt - 1), _BACKOFF_CAP)
            log.warning(
                "%s (%s) failed: %s; retrying in %.0f s (attempt %d/%d)",
                ROUTE_UPLOAD, host, last_reason, delay, attempt, self._max_attempts,
            )
            await self._sleep(delay)
        log.warning("%s (%s) gave up after %d attempts: %s", ROUTE_UPLOAD, host, self._max_attempts, last_reason)
        raise DiscordUnavailable(
            f"{what[0].upper()}{what[1:]} failed after {self._max_attempts} attempts (last: {last_reason})",
            status=last_status,
        )

    # ------------------------------------------------------------------ buttons

    async def press_button(
        self,
        token: str,
        *,
        guild_id: str,
        channel_id: str,
        message_id: str,
        message_flags: int,
        custom_id: str,
        application_id: str | None = None,
    ) -> str:
        """Presses a button of a PixVerse message as the account; returns the interaction's nonce."""
        if application_id is None:
            application_id = await self.pixverse_application_id(token, guild_id)
        nonce = self._nonce()
        body = {
            "type": 3,
            "application_id": str(application_id),
            "guild_id": guild_id,
            "channel_id": channel_id,
            "message_id": message_id,
            "message_flags": message_flags,
            "session_id": self._session_id(),
            "nonce": nonce,
            "data": {"component_type": 2, "custom_id": custom_id},
        }
        status, data = await self._request(token, "POST", INTERACTIONS, ROUTE_INTERACTIONS, body)
        if 200 <= status < 300:
            return nonce
        raise self._other_error(status, data, ROUTE_INTERACTIONS)


def _typed_value(command: Any, option: str, option_type: Any, value: object) -> object:
    """``value`` as Discord expects it for ``option_type``; PixverseClientError when it cannot be."""

    def bad(kind: str) -> PixverseClientError:
        return PixverseClientError(f"Option '{option}' of PixVerse's /{command} must be {kind}, got {value!r}")

    if option_type == OPTION_ATTACHMENT:
        return _upload_file(command, option, value)
    if _looks_like_upload(value):
        raise PixverseClientError(
            f"Option '{option}' of PixVerse's /{command} is not an attachment (type {option_type!r}); "
            "it cannot take a file"
        )

    if option_type == OPTION_STRING:
        if isinstance(value, (dict, list, tuple, set, bytes)):
            raise bad("a string")
        return value if isinstance(value, str) else str(value)
    if option_type == OPTION_INTEGER:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            return int(value)
        raise bad("an integer")
    if option_type == OPTION_BOOLEAN:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if option_type == OPTION_NUMBER:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise bad("a number") from None
            if number == number and number not in (float("inf"), float("-inf")):
                return number
        raise bad("a number")
    if option_type in _SNOWFLAKE_OPTION_TYPES:
        return str(value)
    raise PixverseClientError(
        f"Option '{option}' of PixVerse's /{command} has a type this client cannot send ({option_type!r})"
    )


def _looks_like_upload(value: object) -> bool:
    return hasattr(value, "filename") and hasattr(value, "data")


def _upload_file(command: Any, option: str, value: object) -> UploadFile:
    """An attachment option's value as an :class:`UploadFile`; PixverseClientError when it is not an image file.

    The messages name the value's type and size, never its bytes.
    """
    where = f"Option '{option}' of PixVerse's /{command}"
    filename = getattr(value, "filename", None)
    data = getattr(value, "data", None)
    if not isinstance(filename, str) or not isinstance(data, (bytes, bytearray, memoryview)):
        raise PixverseClientError(
            f"{where} is an attachment: it takes a file with filename (str) and data (bytes), "
            f"got {type(value).__name__}"
        )
    if not filename.strip() or any(ord(c) < 32 or c in "/\\" for c in filename):
        raise PixverseClientError(f"{where} needs a plain file name, got {filename!r}")
    data = bytes(data)
    if not data:
        raise PixverseClientError(f"{where}: the file {filename!r} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise PixverseClientError(
            f"{where}: the file {filename!r} is {len(data)} bytes, more than the {MAX_UPLOAD_BYTES} bytes allowed"
        )
    return value if type(value) is UploadFile and isinstance(value.data, bytes) else UploadFile(filename, data)


def _upload_slots(answer: Any, ids: list[str]) -> list[tuple[str, str]]:
    """``(upload_url, upload_filename)`` for each id, from Discord's answer to the attachments request.

    Entries are matched by their ``id``; an answer whose entries carry no id at all is matched
    by position when it has one entry per file. Anything else is a PixverseClientError.
    """

    def malformed(why: str) -> PixverseClientError:
        return PixverseClientError(f"Discord's answer to {ROUTE_ATTACHMENTS} is malformed: {why}")

    entries = answer.get("attachments") if isinstance(answer, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise malformed("no list of attachments")
    if entries and all(e.get("id") is None for e in entries):
        if len(entries) != len(ids):
            raise malformed(f"{len(entries)} upload slots without ids for {len(ids)} files")
        by_id = dict(zip(ids, entries))
    else:
        by_id = {str(e.get("id")): e for e in entries if e.get("id") is not None and not isinstance(e.get("id"), bool)}
    slots: list[tuple[str, str]] = []
    for attachment_id in ids:
        entry = by_id.get(attachment_id)
        if entry is None:
            raise malformed(f"no upload slot for file id {attachment_id}")
        upload_url, upload_filename = entry.get("upload_url"), entry.get("upload_filename")
        try:
            parts = urlsplit(upload_url) if isinstance(upload_url, str) else None
        except ValueError:  # for example a broken IPv6 host
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise malformed(f"file id {attachment_id} has no http(s) upload_url")
        if not isinstance(upload_filename, str) or not upload_filename:
            raise malformed(f"file id {attachment_id} has no upload_filename")
        slots.append((upload_url, upload_filename))
    return slots
