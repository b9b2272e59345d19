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
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.accounts.token_check import TOKEN_CHARS

log = logging.getLogger(__name__)

PIXVERSE_APP_NAME = "PixVerse"
DISCORD_EPOCH_MS = 1420070400000

INTERACTIONS = "/interactions"
ROUTE_INTERACTIONS = "POST /interactions"
ROUTE_COMMAND_INDEX = "GET /guilds/{guild}/application-command-index"

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
    def _typed_options(command: dict[str, Any], options: Mapping[str, object]) -> list[dict[str, Any]]:
        """The ``data.options`` list: caller's order, types from the command's definitions."""
        name = command.get("name")
        definitions = {
            d["name"]: d for d in command.get("options") or [] if isinstance(d, dict) and isinstance(d.get("name"), str)
        }
        result: list[dict[str, Any]] = []
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
            result.append({"type": option_type, "name": option_name, "value": typed})
        given = {o["name"] for o in result}
        missing = [n for n, d in definitions.items() if d.get("required") and n not in given]
        if missing:
            raise PixverseClientError(f"PixVerse's /{name} needs the option(s) {', '.join(missing)}")
        return result

    def _interaction_body(
        self, command: dict[str, Any], guild_id: str, channel_id: str, options: Mapping[str, object]
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
                "options": self._typed_options(command, options),
                "application_command": command,
                "attachments": [],
            },
        }

    async def run_command(
        self, token: str, *, guild_id: str, channel_id: str, name: str, options: dict[str, object]
    ) -> str:
        """Runs PixVerse's ``/name`` in the channel as the account; returns the interaction's nonce.

        A 400 saying the command is unknown or outdated refetches the server's index once and
        submits again; a 400 after that is :class:`CommandUnavailable`.
        """
        command = await self.command(token, guild_id, name)
        body = self._interaction_body(command, guild_id, channel_id, options)
        status, data = await self._request(token, "POST", INTERACTIONS, ROUTE_INTERACTIONS, body)
        if 200 <= status < 300:
            return body["nonce"]
        if status != 400 or not _is_stale_command(data):
            raise self._other_error(status, data, ROUTE_INTERACTIONS)

        log.info("%s answered 400 (stale /%s); refetching the command index once", ROUTE_INTERACTIONS, name)
        command = await self.command(token, guild_id, name, refresh=True)
        body = self._interaction_body(command, guild_id, channel_id, options)
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
    if option_type == OPTION_ATTACHMENT:
        raise PixverseClientError(
            f"Option '{option}' of PixVerse's /{command} is an attachment; this client does not upload files"
        )
    raise PixverseClientError(
        f"Option '{option}' of PixVerse's /{command} has a type this client cannot send ({option_type!r})"
    )
