"""The discord.py bot: setup_hook opens the Core, loads the cogs and syncs the commands;
close() stops the Core's services while Discord is still there, then unloads the cogs and leaves
the gateway (discord.py's Bot.close), then closes the rest of the Core.

It is also the Core's :class:`~bot.core.DiscordView`: which channels it sees, whether its
gateway session is up, and a channel's history.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
import discord
import yarl
from discord.ext import commands

from bot.core import Core
from bot.errors import StartupError
from bot.settings import Settings
from bot.shards import shard_of
from bot.tree import BotTree

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.accounts", "cogs.jobs", "cogs.api_tokens", "cogs.settings", "cogs.operators")
HISTORY_PAGE = 100
COMMANDS_FINGERPRINT_META = "commands_fingerprint"


def point_discord_py_at(settings: Settings) -> None:
    """Every REST call and the gateway go where the settings say (proxies, tests)."""
    discord.http.Route.BASE = settings.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def freeze_startup_objects() -> None:
    """Takes what is alive after startup (modules, classes, cogs, settings) out of the collector's sight.

    Those objects live as long as the process. Left tracked, every full garbage collection
    walks all of them again: a pause of milliseconds at random moments, which was most of
    the HTTP API's p99 under load (bench/http_bench.py). gc.freeze() is CPython's tool for it.

    Only the young generations are collected first: startup's garbage is there (the collector ran
    as usual during the imports), and in the bot's own start a full collection after them found
    nothing more, while it walks every module again: about 40 ms of the start to ready.
    """
    gc.collect(1)
    gc.freeze()


@dataclass(frozen=True)
class DiscordRequest:
    """A request to Discord waiting for its answer (REST, or the gateway's websocket handshake)."""

    method: str
    url: yarl.URL
    started: float  # time.monotonic(), as the event loop's clock

    @property
    def gateway(self) -> bool:
        return self.url.scheme in ("ws", "wss")

    @property
    def shown_url(self) -> str:
        """The URL as a log line shows it: no query (the gateway's version and encoding), no credentials."""
        return str(self.url.with_user(None).with_query(None).with_fragment(None))


class DiscordRequests:
    """The bot's requests to Discord in flight, REST and the gateway's handshake alike, seen
    through discord.py's public ``http_trace`` option (an aiohttp TraceConfig). Startup's
    deadline names the request Discord did not answer; a stop cancels only a task that waits on one."""

    def __init__(self, trace: aiohttp.TraceConfig | None = None) -> None:
        self.trace = trace or aiohttp.TraceConfig()
        self._in_flight: dict[int, DiscordRequest] = {}
        self.last_gateway: DiscordRequest | None = None  # the last websocket handshake begun
        self.trace.on_request_start.append(self._started)
        self.trace.on_request_end.append(self._ended)
        self.trace.on_request_exception.append(self._ended)

    async def _started(self, session: aiohttp.ClientSession, context: SimpleNamespace, params) -> None:
        request = DiscordRequest(params.method, params.url, time.monotonic())
        self._in_flight[id(context)] = request
        if request.gateway:
            self.last_gateway = request

    async def _ended(self, session: aiohttp.ClientSession, context: SimpleNamespace, params) -> None:
        self._in_flight.pop(id(context), None)

    def __len__(self) -> int:
        return len(self._in_flight)

    def oldest(self) -> DiscordRequest | None:
        return min(self._in_flight.values(), key=lambda request: request.started, default=None)


class PixverseBot(commands.AutoShardedBot):
    """Sharded as the settings say: every shard Discord recommends in this process by default;
    SHARD_COUNT and SHARD_IDS run some of them here and the rest in other processes sharing
    the database."""

    def __init__(self, settings: Settings, **client_options) -> None:
        point_discord_py_at(settings)
        # The bot never joins voice: its missing voice libraries are not worth a warning.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True
        # The bot follows PixVerse's answers in the account channels.
        intents.guild_messages = True
        intents.message_content = True
        # Startup's deadlines watch the requests to Discord (another trace passed in keeps its hooks).
        self.discord_requests = DiscordRequests(client_options.pop("http_trace", None))
        # Set at the first READY of the gateway: from then on discord.py reconnects by itself.
        self.reached_gateway = asyncio.Event()
        # discord.py's cache of the last 1,000 messages is never read by the bot (edits arrive as raw
        # events, messages through their payload), and every MESSAGE_UPDATE would scan it.
        client_options.setdefault("max_messages", None)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=BotTree,
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=self.discord_requests.trace,
            shard_count=settings.shard_count,
            shard_ids=list(settings.shard_ids) if settings.shard_ids is not None else None,
            **client_options,
        )
        self.settings = settings
        self._core: Core | None = None
        self._shutting_down = False
        self._dispatcher_started = False
        # A fresh READY after the first (a session that could not be resumed) empties
        # discord.py's cache while is_ready() stays true, until the servers are streamed in.
        self._reloading_servers = False

    @property
    def core(self) -> Core:
        """The services; open from setup_hook until close()."""
        if self._core is None:
            raise RuntimeError("the Core is not open (before setup_hook or after close)")
        return self._core

    async def setup_hook(self) -> None:
        core = await Core.open(self.settings, self)
        if self._shutting_down:
            # close() ran while the Core was opening (SIGTERM during a long migration): it found
            # no Core to close, so this is the last place that can.
            await core.close()
            return
        self._core = core
        for extension in EXTENSIONS:
            if self._shutting_down:
                return  # close() is under way and closes the Core; loading more would race it
            try:
                await self.load_extension(extension)
            except commands.ExtensionFailed as exc:
                if isinstance(exc.original, StartupError):
                    raise exc.original from None
                raise
        if self._shutting_down:
            return  # close() is under way: no sync against a closing Core
        await self.sync_commands_if_changed()
        freeze_startup_objects()

    # --- the Core's view of Discord ----------------------------------------------------

    def runs_shard_of(self, guild_id: int) -> bool:
        """True when the server's shard runs in this process (its gateway events come here)."""
        if self.shard_ids is None or not self.shard_count:
            return True
        return shard_of(guild_id, self.shard_count) in self.shard_ids

    async def channel_visible(self, guild_id: str, channel_id: str) -> bool | None:
        # The HTTP API listens from setup_hook on, before the gateway has delivered the servers.
        if not self.is_ready() or self._reloading_servers:
            return None
        if self.runs_shard_of(int(guild_id)):
            guild = self.get_guild(int(guild_id))
            return guild is not None and guild.get_channel_or_thread(int(channel_id)) is not None
        # A server of another process's shard: this process has none of its channels cached,
        # so Discord is asked (with the bot's token: only a channel the bot can see answers).
        try:
            channel = await self.http.get_channel(int(channel_id))
        except (discord.NotFound, discord.Forbidden):
            return False
        except (discord.HTTPException, OSError, TimeoutError):
            return None
        return str(channel.get("guild_id")) == guild_id

    def gateway_problem(self) -> str | None:
        # is_ready() stays true while discord.py reconnects: ask each shard's socket itself.
        if self.is_closed() or not self.is_ready():
            return "not connected to the Discord gateway"
        down = sorted(shard_id for shard_id, shard in self.shards.items() if shard.is_closed())
        if not down:
            return None
        if len(self.shards) == 1:
            return "not connected to the Discord gateway"
        return "not connected to the Discord gateway (shard " + ", ".join(map(str, down)) + ")"

    async def read_history(self, channel_id: str, after: int):
        """A channel's messages after a snowflake, oldest first, with the bot's token."""
        while True:
            page = await self.http.logs_from(channel_id, HISTORY_PAGE, after=after)
            if not page:
                return
            page.sort(key=lambda m: int(m["id"]))
            for message in page:
                yield message
            if len(page) < HISTORY_PAGE:
                return
            after = int(page[-1]["id"])

    def commands_fingerprint(self) -> str:
        payload = sorted((command.to_dict(self.tree) for command in self.tree.get_commands()), key=lambda c: c["name"])
        blob = json.dumps({"application_id": self.application_id, "commands": payload}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    async def sync_commands_if_changed(self) -> bool:
        """Registers the commands only when they differ from the last registration.

        Discord rate-limits command registration hard; a restart must not touch it.
        """
        fingerprint = self.commands_fingerprint()
        if await self.core.db.get_meta(COMMANDS_FINGERPRINT_META) == fingerprint:
            log.info("Slash commands unchanged since the last registration; not syncing")
            return False
        synced = await self.tree.sync()
        await self.core.db.set_meta(COMMANDS_FINGERPRINT_META, fingerprint)
        log.info("Registered %d slash commands with Discord", len(synced))
        return True

    async def on_connect(self) -> None:
        # Dispatched on every fresh READY (never on a resume, which keeps the cache).
        self.reached_gateway.set()
        if self.is_ready():
            self._reloading_servers = True

    async def on_ready(self) -> None:
        self._reloading_servers = False
        log.info("Connected as %s (%s) in %d servers", self.user, self.user.id if self.user else "?", len(self.guilds))
        # Recovery reads channel history, so it starts once the gateway is connected:
        # anything PixVerse posts from now on arrives as events, nothing falls in between.
        if self._core is not None and not self._dispatcher_started:
            self._dispatcher_started = True
            self._core.dispatcher.start_soon()

    async def close(self) -> None:
        # First the Core's services while Discord is still there: the HTTP API (no new requests),
        # the dispatcher (its last notices still reach members through the jobs cog), the
        # replyUrl poster. Then discord.py's Bot.close unloads the cogs and leaves the gateway.
        # Last the store: token checker and database. discord.py may call close() again from
        # its connect loop, and a SIGTERM may land during setup_hook: the flag tells setup_hook,
        # and the Core is taken from the bot before closing, so only one caller releases it.
        self._shutting_down = True
        core = self._core
        if core is not None:
            await core.stop_services()
        await super().close()
        core, self._core = self._core, None
        if core is not None:
            await core.close()
