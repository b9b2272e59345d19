"""The HTTP server under the API: limits a hostile client cannot wear down, and JSON for every answer.

aiohttp's ``AppRunner`` + ``TCPSite`` keep a silent connection for an hour, let a client send
its request head one byte at a time for as long as it likes, accept connections until the
process runs out of file descriptors, and answer malformed requests with ``text/plain`` (and
a traceback at ERROR). Here the listening socket is the bot's own (``loop.create_server``),
and each connection is a :class:`aiohttp.web.RequestHandler` subclass with:

- the keep-alive idle timeout (``HTTP_KEEPALIVE_TIMEOUT_SECONDS``), aiohttp's own;
- a deadline for the request head (``HTTP_REQUEST_TIMEOUT_SECONDS``) from the first byte of a
  request (or from the connection's opening) until aiohttp has parsed the head; past it the
  client gets a JSON 408 and the connection is closed;
- a cap on open connections (``HTTP_MAX_CONNECTIONS``): beyond it a new connection is
  answered a JSON 503 at once and closed, never queued;
- ``handle_error`` answering the parser's own refusals as the API's ``{"error", "code"}``,
  logged as one DEBUG line.

Everything used is aiohttp's public surface (``web.AppRunner.server``, ``web.RequestHandler``
and its ``handle_error`` and ``finish_response``, ``BaseRequest.protocol``); ``tests/test_http_server.py`` checks it
against the installed aiohttp, so an upgrade that changes it fails there first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    ContentEncodingError,
    HttpProcessingError,
    LineTooLong,
)
from aiohttp.web import RequestPayloadError

from bot.errors import INTERNAL_ERROR

log = logging.getLogger(__name__)

# File descriptors kept for everything else of the process (database, Discord, logs).
RESERVED_FDS = 64


@dataclass(frozen=True)
class HttpLimits:
    keepalive_timeout: float = 15.0
    request_timeout: float = 10.0
    max_connections: int = 512


def canned_response(status: int, reason: str, error: str) -> bytes:
    """A complete JSON error answer, for moments when no request object exists."""
    body = json.dumps({"error": error, "code": status}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


TOO_MANY_CONNECTIONS = "The server has too many open connections; try again in a moment"
REQUEST_TIMEOUT = "The request was not received in time"
# Said whether the parser refuses the encoding (br without Brotli) or a route does (any other).
UNSUPPORTED_ENCODING = "Content-Encoding is not supported; send the body as identity, gzip or deflate"


def parser_refusal(status: int, exc: BaseException | None) -> tuple[int, str]:
    """The status and text for a request aiohttp's parser refused, before any route saw it.

    Fixed texts: the parser's own messages quote the offending bytes, which may be anything."""
    if isinstance(exc, ContentEncodingError):
        return 415, UNSUPPORTED_ENCODING
    if isinstance(exc, LineTooLong):
        # The C parser words a long request line and a long header alike.
        return 431, "The request line or a header field is too large"
    if isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        return 431, "Request header fields are too large (too many headers)"
    if isinstance(exc, BadHttpMethod):
        return 400, "Malformed HTTP request: bad method"
    if status == 413:
        return 413, "Request body is too large"
    return 400, "Malformed HTTP request"


class _Connection(web.RequestHandler):
    """One client connection: aiohttp's handler, with the head deadline and JSON refusals."""

    def __init__(self, manager: web.Server, *, server: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limited = server
        self._head_deadline: asyncio.TimerHandle | None = None
        self._handling = False
        # Counted from its creation: asyncio accepts a burst of sockets and calls the factory
        # for each before any connection_made runs, so counting there let a burst past the cap.
        self._counted = True
        server.open_connections += 1

    # --- the head deadline ------------------------------------------------------------

    def _arm(self) -> None:
        if self._head_deadline is None and not self._handling:
            self._head_deadline = asyncio.get_running_loop().call_later(
                self._limited.limits.request_timeout, self._head_too_slow
            )

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if transport is None or self._handling:
            return
        log.debug("HTTP connection closed: no complete request head within %.0f s", self._limited.limits.request_timeout)
        transport.write(canned_response(408, "Request Timeout", REQUEST_TIMEOUT))
        self.force_close()
        transport.close()

    def request_started(self) -> None:
        self._handling = True
        self._disarm()

    async def finish_response(self, request: Any, resp: Any, start_time: Any) -> Any:
        """The answer is written: the connection is between requests again, whatever path the
        request took (a route, a parser refusal, aiohttp's own answer to an Expect header)."""
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._handling = False
            self._disarm()

    # --- asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # a connection that never sends anything is closed too

    def data_received(self, data: bytes) -> None:
        self._arm()  # the first byte of a request starts its head's deadline
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._limited.open_connections -= 1
        self._disarm()
        super().connection_lost(exc)

    # --- the parser's refusals --------------------------------------------------------

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's own error log. A body the client broke (bad gzip, a chunk cut short) fails
        again when aiohttp drains it after the answer: one DEBUG line, not a traceback."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, (RequestPayloadError, HttpProcessingError, ConnectionError)):
            log.debug("HTTP connection closed after a malformed body (%s)", type(exc).__name__)
            return
        log.error(*args, **kwargs)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            # Not a client's fault: a real defect, logged with its traceback.
            log.error("HTTP request failed outside the API's routes", exc_info=exc)
            code, error = 500, INTERNAL_ERROR
        else:
            code, error = parser_refusal(status, exc)
            log.debug("HTTP request refused by the parser: %d %s (%s)", code, error, type(exc).__name__)
        if request.writer.output_size > 0:
            # Part of an answer is out already: the connection is broken, as aiohttp's own says.
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        body = json.dumps({"error": error, "code": code}).encode()
        response = web.Response(body=body, status=code, content_type="application/json", charset="utf-8")
        response.force_close()
        return response


class _Refuse(asyncio.Protocol):
    """A connection beyond HTTP_MAX_CONNECTIONS: a JSON 503 at once, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(canned_response(503, "Service Unavailable", TOO_MANY_CONNECTIONS))
        transport.close()


def request_protocol(request: web.BaseRequest) -> _Connection | None:
    protocol = request.protocol
    return protocol if isinstance(protocol, _Connection) else None


class LimitedServer:
    """Serves an aiohttp application on host:port with :class:`HttpLimits`."""

    def __init__(self, app: web.Application, host: str, port: int, limits: HttpLimits) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits
        self.open_connections = 0
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        self._listener: asyncio.base_events.Server | None = None
        self._max_connections = limits.max_connections

    @property
    def max_connections(self) -> int:
        return self._max_connections

    async def start(self) -> None:
        self._max_connections = fit_to_file_limit(self.limits.max_connections)
        await self._runner.setup()
        manager = self._runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()
        options = dict(
            loop=loop,
            keepalive_timeout=self.limits.keepalive_timeout,
            access_log=None,
            lingering_time=1.0,
        )

        def factory() -> asyncio.Protocol:
            if self.open_connections >= self._max_connections:  # counted as each is created
                return _Refuse()
            return _Connection(manager, server=self, **options)

        try:
            self._listener = await loop.create_server(factory, self.host, self.port, reuse_address=True)
        except BaseException:
            await self._runner.cleanup()
            raise
        if self.port == 0:
            self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops accepting, lets requests under way finish (5 s at most), closes every connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        await self._runner.cleanup()


def fit_to_file_limit(wanted: int) -> int:
    """HTTP_MAX_CONNECTIONS within the process's file limit, raising the soft limit if allowed.

    At the file limit accept() fails and asyncio stops accepting for a while: /healthz would
    time out. So the cap stays RESERVED_FDS below the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < needed:
            fitted = max(1, soft - RESERVED_FDS)
            log.warning(
                "HTTP_MAX_CONNECTIONS=%d does not fit the process's file limit (%d); serving at most %d connections",
                wanted, soft, fitted,
            )
            return fitted
    return wanted
