"""Gateway: the websocket, sessions, IDENTIFY / RESUME, dispatch with per-session backlog, shards.

Opcodes are handled in :meth:`GatewayMixin._on_gateway_frame`. Every dispatch gets the
session's next sequence number and stays in its backlog (``BACKLOG_LIMIT``) to be replayed
on RESUME. A session that IDENTIFYs with ``shard [id, count]`` gets only the guilds of that
shard (:meth:`GatewayMixin._serves`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tests.e2e.fake.payloads import (
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE_UPDATE,
    OP_RECONNECT,
    OP_REQUEST_GUILD_MEMBERS,
    OP_RESUME,
    OP_VOICE_STATE_UPDATE,
)


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


class GatewayMixin:
    """Gateway sessions and connections, and what the bot sent on them."""

    heartbeat_interval_ms = 41250
    BACKLOG_LIMIT = 1000

    def _init_gateway(self) -> None:
        # --- recordings ----------------------------------------------------------------
        self.identify_payloads: list[dict] = []
        self.gateway_received: list[dict] = []  # every frame the bot sent on the gateway
        self.identified_at: list[float] = []  # time.perf_counter() of each accepted IDENTIFY (bench/)
        self.refuse_intents = False  # True: a privileged intent not enabled in the Developer Portal (4014)
        self.gateway_connections = 0  # websocket connections accepted so far
        self.gateway_queries: list[dict[str, str]] = []  # query string of each connection (v, encoding, compress)

        # --- gateway -------------------------------------------------------------------
        # The shard count /gateway/bot recommends. A session that IDENTIFYs with a shard
        # [id, count] gets only the servers of that shard ((guild_id >> 22) % count == id):
        # in READY, GUILD_CREATE, and every event that names a guild, as Discord does.
        self.shard_count = 1
        self._sessions: dict[str, _GatewaySession] = {}
        self._connections: set[_GatewayConnection] = set()
        self._identified = asyncio.Event()

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def _close_gateway_connections(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake discord stopping")

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
        if self.refuse_intents and d.get("intents", 0) & (1 << 15):  # MESSAGE_CONTENT, privileged
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = d.get("shard")
        if shard is not None and (len(shard) != 2 or not 0 <= shard[0] < shard[1]):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        self.identify_payloads.append(d)
        self.identified_at.append(time.perf_counter())
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
