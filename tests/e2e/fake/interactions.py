"""Interactions: building INTERACTION_CREATE payloads, driving them, and what the bot answers.

:meth:`InteractionsMixin.make_interaction` builds the payload for a registered command,
:meth:`InteractionsMixin.interact` / ``invoke`` / ``autocomplete`` dispatch it and wait for the
answer, which is recorded live in an :class:`~tests.e2e.fake.payloads.InteractionResult`
(callback, followups, ``@original`` edits and deletes; the webhook routes need no
Authorization, the token in the URL is the credential). ``_changed`` is the condition every
state change notifies (``_notify``) and every ``wait_for_*`` helper waits on (``_wait_until``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from tests.e2e.fake.messages import _message_limit_errors
from tests.e2e.fake.payloads import (
    _RECORD,
    CALLBACK_AUTOCOMPLETE_RESULT,
    CALLBACK_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CALLBACK_UPDATE_MESSAGE,
    DEFAULT_EVERYONE_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    OPTION_ATTACHMENT,
    OPTION_SUB_COMMAND,
    OPTION_SUB_COMMAND_GROUP,
    InteractionResult,
    MemberFile,
    RecordedFile,
    _error,
    _form_errors,
    _iso,
    text_channel,
    _json,
)


@dataclass
class _InteractionState:
    result: InteractionResult
    payload: dict
    dispatched_at: int = 0  # len(fake.requests) when dispatched, for diagnostics
    original_loading: bool = False  # deferred and not yet resolved by a followup/edit
    created: float = field(default_factory=time.monotonic)  # the token's 15 minutes count from here


class InteractionsMixin:
    """Interactions by id and by token, and the condition every waiting helper waits on."""

    def _init_interactions(self) -> None:
        # --- interactions --------------------------------------------------------------
        self._interactions_by_id: dict[str, _InteractionState] = {}
        self._interactions_by_token: dict[str, _InteractionState] = {}
        # Seconds an interaction's token answers (Discord: 15 minutes); past it every webhook
        # route of that token answers 401, code 50027 "Invalid Webhook Token", as Discord does.
        self.interaction_token_seconds: float = 15 * 60
        # The bot's permissions in a channel, as each interaction there tells it (``app_permissions``);
        # a channel not named here: the default @everyone permissions.
        self.app_permissions: dict[int, int] = {}
        # Seconds Discord waits for an interaction's first answer (its callback): 3. Past it the
        # callback answers 404, code 10062 "Unknown interaction", and the member sees "The application
        # did not respond". None (the default): not enforced, so that a loaded machine's slow test
        # does not fail here; a test about the 3 s sets it.
        self.interaction_answer_seconds: float | None = None

        # --- sync primitives (no loop binding at construction on 3.10+) ---------------
        self._changed = asyncio.Condition()  # notified on every interaction change

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
        resolved_channels: dict[str, dict] = {}

        def resolve_channel(value: Any) -> str:
            # A channel option (type 7): its id, and the channel in data.resolved.channels as
            # Discord sends it (with the member's permissions there).
            found = ((self.guilds.get(guild_id) or {}).get("channels") or {}).get(int(value))
            channel = found or {"id": str(value), "type": 0, "name": f"channel-{value}"}
            resolved_channels[str(value)] = {"id": str(value), "type": channel.get("type", 0),
                                             "name": channel.get("name"), "parent_id": channel.get("parent_id"),
                                             "permissions": str(permissions if permissions is not None else 0)}
            return str(value)

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
                elif otype == 7 and value is not None:
                    value = resolve_channel(value)
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
        if resolved_channels:
            data.setdefault("resolved", {})["channels"] = resolved_channels

        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "application_id": str(self.application_id),
            "type": type,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(self.app_permissions.get(channel_id, DEFAULT_EVERYONE_PERMISSIONS)),
            "entitlements": [],
            "entitlement_sku_ids": [],
            # discord.py reads this key unconditionally (Interaction.filesize_limit).
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id is not None:
            guild = self.guilds.get(guild_id)
            channel = (guild or {}).get("channels", {}).get(channel_id)
            if channel is None:
                channel = text_channel(channel_id, guild_id, name=f"channel-{channel_id}")
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
            **self._mention_fields(body.get("content") or "", body.get("allowed_mentions")),
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
        if self.interaction_answer_seconds is not None and (
                time.monotonic() - state.created > self.interaction_answer_seconds):
            result.late_callbacks += 1
            return _error(404, "Unknown interaction", 10062)
        body = request[_RECORD].json or {}
        ctype = body.get("type")
        data = body.get("data")
        if ctype in (CALLBACK_CHANNEL_MESSAGE, CALLBACK_UPDATE_MESSAGE) and isinstance(data, dict):
            if errors := _message_limit_errors(data):
                return _form_errors({"data": errors})
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
            self._record_version(message_id, "callback", data, msg)
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
        if time.monotonic() - state.created > self.interaction_token_seconds:
            return _error(401, "Invalid Webhook Token", 50027)
        return state

    async def _h_followup(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        result = state.result
        body = request[_RECORD].json or {}
        if errors := _message_limit_errors(body):
            return _form_errors(errors)
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
        self._record_version(message_id, "followup", body, msg)
        await self._notify()
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(msg)
        return web.Response(status=204)

    @staticmethod
    def _resolve_message_id(state: _InteractionState, raw: str) -> str | web.Response:
        """The webhook message a route names (``@original`` or an id), or Discord's 404."""
        message_id = state.result.original_message_id if raw == "@original" else raw
        if message_id is None or message_id not in state.result.message_objects:
            return _error(404, "Unknown Message", 10008)
        return message_id

    async def _h_get_webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        message_id = self._resolve_message_id(state, request.match_info["message_id"])
        if isinstance(message_id, web.Response):
            return message_id
        return _json(state.result.message_objects[message_id])

    async def _h_edit_webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        # The message's channel is its interaction's channel (see _rate_limit).
        if (limited := self._rate_limit(request, str(state.payload.get("channel_id")))) is not None:
            return limited
        result = state.result
        message_id = self._resolve_message_id(state, request.match_info["message_id"])
        if isinstance(message_id, web.Response):
            return message_id
        body = request[_RECORD].json or {}
        if errors := _message_limit_errors(body):
            return _form_errors(errors)
        msg = result.message_objects[message_id]
        for key in ("content", "embeds", "components", "poll"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "content" in body:
            # Discord rebuilds the mentions from the new content with this request's allowed_mentions.
            msg.update(self._mention_fields(msg["content"], body.get("allowed_mentions")))
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
        self._record_version(message_id, "webhook_edit", body, msg)
        await self._notify()
        return _json(msg)

    async def _h_delete_webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if isinstance(state, web.Response):
            return state
        message_id = self._resolve_message_id(state, request.match_info["message_id"])
        if isinstance(message_id, web.Response):
            return message_id
        del state.result.message_objects[message_id]
        state.result.deleted_message_ids.append(message_id)
        if message_id == state.result.original_message_id:
            state.original_loading = False
        await self._notify()
        return web.Response(status=204)
