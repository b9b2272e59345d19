"""A fake Discord (REST API + gateway) for end-to-end tests.

The *real* discord.py client is pointed at this server (``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``), logs in, syncs its command tree,
connects to the gateway and receives real ``INTERACTION_CREATE`` payloads built here.
Everything the bot sends back (interaction callbacks, followups, ``@original`` edits) is
recorded per interaction so tests can assert on it.

This package deliberately does not import discord.py: it speaks the wire protocol only,
so it cannot accidentally "agree" with the client by sharing code with it.
``tests/e2e/fake_discord.py`` re-exports it under the old module name.

Layout (one module per concern, to make adding behaviour easy). :class:`FakeDiscord`
(here) composes one mixin per module; each mixin holds its own methods and creates its own
state in ``_init_<concern>()``, and they all work on the one object, so any method may use
another mixin's state (e.g. the route table names every handler):

* ``payloads.py``: Discord's wire constants (message flags, opcodes, interaction /
  callback / option / message types, intents, default permissions), the answer helpers
  (:func:`~tests.e2e.fake.payloads._json`, ``_error``, ``_invalid_form``,
  ``_form_errors``), ``_RECORD`` and the records tests read: :class:`RecordedRequest`
  (with ``status`` and ``at``), :class:`RecordedFile`, :class:`MemberFile`,
  :class:`InteractionResult`. No state.
* ``rest.py`` (:class:`~tests.e2e.fake.rest.RestMixin`): the aiohttp app. The whole REST
  surface is the route table in ``_build_app``; handlers are ``_h_*`` methods (of any
  mixin) that receive the aiohttp request, whose body the recording middleware has already
  parsed into ``request[_RECORD].json`` / ``request[_RECORD].files``. Also login
  (``/users/@me``, user tokens), application commands (validated like Discord), guilds
  and channels (``add_guild``, payload builders, ``snowflake``) and the fake CDN.
* ``gateway.py`` (:class:`~tests.e2e.fake.gateway.GatewayMixin`): the websocket, sessions,
  IDENTIFY / RESUME with backlog replay, ``send_event`` / ``_dispatch``, shards (a session
  gets only its shard's guilds); opcodes are handled in ``_on_gateway_frame``.
* ``interactions.py`` (:class:`~tests.e2e.fake.interactions.InteractionsMixin`):
  ``make_interaction`` / ``interact`` / ``invoke`` / ``autocomplete``, the callback,
  followup and ``@original`` routes recorded per interaction in an
  :class:`InteractionResult`, and the waiting helpers (``_wait_until`` / ``_notify`` on
  ``_changed``). A member's file for the bot's own slash command: pass a
  :class:`MemberFile` as the value of a type-11 option to ``make_interaction`` /
  ``invoke``; it lands in ``data.resolved.attachments`` and the fake CDN
  (``/cdn/attachments/...``) serves its bytes.
* ``messages.py`` (:class:`~tests.e2e.fake.messages.MessagesMixin`): guild channel
  messages (``channel_messages``), readable with the bot token
  (``GET /channels/{id}/messages``, Discord's paging), posted and edited by the bot
  (``POST`` / ``PATCH /channels/{C}/messages[/{M}]``), reaching the bot as
  MESSAGE_CREATE / MESSAGE_UPDATE through ``_emit_message_create`` /
  ``_edit_channel_message``, filtered by the intents the bot identified with
  (GUILD_MESSAGES to get them at all, MESSAGE_CONTENT for content/embeds/attachments/
  components). Every message body the bot sends (interaction callbacks of types 4/7,
  followups, ``@original`` / webhook edits, channel POST / PATCH) is checked against
  Discord's limits (``_message_limit_errors``: 400 50035 with a nested ``errors``), gets
  ``mentions`` from content + ``allowed_mentions`` (``_mention_fields``) and is kept per
  message in :meth:`FakeDiscord.message_versions`. ``message_rate_limit = (count, per)``
  turns on a per-channel fixed-window rate limit on channel POST / PATCH and webhook
  message edits (``_rate_limit``: Discord's 429, recorded in ``rate_limited``).
* ``pixverse.py`` (:class:`~tests.e2e.fake.pixverse.PixverseMixin`): the fake PixVerse
  (:meth:`FakeDiscord.add_pixverse`, shared/pixverse-protocol.md part 5) answers
  user-token ``POST /interactions`` with 204 and runs each job as a task
  (``_pixverse_run``) that posts "Waiting to start", edits it once per value of
  ``pixverse_progress_steps`` (default ``[37]``: "(37%)") and posts the result with videos
  and buttons, ``pixverse_step_delay`` apart. Tests steer it with the ``pixverse_*``
  attributes (moderated words, overloaded prompts, blocked tokens, hold / release) and read
  ``pixverse_executing`` / ``pixverse_max_executing`` / ``pixverse_interactions`` /
  ``pixverse_jobs`` / ``message_events``. A decoy application with its own ``create`` is
  listed first in the command index and never answers. ``animate`` / ``meme_face`` take an
  image uploaded first (``POST /channels/{C}/attachments`` + PUT); the job records it under
  ``images``; their messages carry the part-4 group (``(prompt: P motion: M)`` /
  ``(prompt: P)``) and their results only ``U1`` / ``ReDo``.

To add a route: write the ``_h_*`` handler in its concern's mixin and add one line to the
table in ``RestMixin._build_app``. To add state: create it in that mixin's ``_init_*``.

Wire details that matter (all checked against discord.py 2.7 source):

* discord.py's ``json_or_text`` only parses a body whose Content-Type is *exactly*
  ``application/json``. ``aiohttp.web.json_response`` sends
  ``application/json; charset=utf-8``, which discord.py would hand back as a *string*,
  so every JSON answer here goes through ``payloads._json`` instead.
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
  treated as a rate limit if it carries a ``Via`` header; otherwise it's a Cloudflare ban.
  Both discord.py paths retry a proper 429 after ``retry_after``: see
  ``MessagesMixin._rate_limit``.)
* After a type-5 defer, the first followup *edits the loading message* (same id) and keeps
  the defer's ephemerality whatever its own flags say (Discord docs, Create Followup).
* User tokens send ``Authorization: <token>`` raw. Message ids are time-based snowflakes,
  so ``after=<snowflake of a time>`` works; with ``after`` Discord returns the ``limit``
  oldest messages after it, newest first.
"""

from __future__ import annotations

from aiohttp import web

from tests.e2e.fake.gateway import GatewayMixin
from tests.e2e.fake.interactions import InteractionsMixin
from tests.e2e.fake.messages import MessagesMixin
from tests.e2e.fake.payloads import InteractionResult, MemberFile, RecordedFile, RecordedRequest
from tests.e2e.fake.pixverse import DECOY_APPLICATION_ID, PIXVERSE_APPLICATION_ID, PixverseMixin
from tests.e2e.fake.rest import RestMixin

__all__ = [
    "FakeDiscord",
    "InteractionResult",
    "MemberFile",
    "RecordedRequest",
    "RecordedFile",
    "PIXVERSE_APPLICATION_ID",
    "DECOY_APPLICATION_ID",
]


class FakeDiscord(RestMixin, GatewayMixin, InteractionsMixin, MessagesMixin, PixverseMixin):
    """Fake Discord REST + gateway on 127.0.0.1 (random free port)."""

    def __init__(
        self,
        *,
        bot_token: str = "bot-token",
        application_id: int = 900000000000000001,
        bot_user_id: int = 900000000000000001,
    ) -> None:
        self._init_rest(bot_token=bot_token, application_id=application_id, bot_user_id=bot_user_id)
        self._init_gateway()
        self._init_interactions()
        self._init_messages()
        self._init_pixverse()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._runner = web.AppRunner(self._build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._stop_pixverse_jobs()
        await self._close_gateway_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
