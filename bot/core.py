"""The Core: every service of the bot, built once, in order, and released in reverse. No Discord UI here.

``Core.open(settings, discord)`` opens the database, loads the token key, and builds the token
checker, the account service, the API tokens, the replyUrl poster, the dispatcher with its
backend, and the HTTP server, each entered into an :class:`contextlib.AsyncExitStack` as it is
built; ``close()`` releases them in reverse: the HTTP server (no new requests), the dispatcher (its
lease, its tasks), the replyUrl poster (after the dispatcher's last notices), the token
checker, the database. The first three are the *services*, which :meth:`Core.stop_services`
stops alone: the bot does that while Discord is still connected, so that the dispatcher's last
notices still reach members, then leaves the gateway, then closes the rest. A failure half-way
through ``open`` releases what was opened and goes on up.

What the Core needs of the Discord side is :class:`DiscordView`: whether a server's channel is
visible, whether the gateway is connected, and a channel's history. The discord.py bot is one
implementation; tests and benchmarks give their own.

``core.events`` (bot/events.py) is the one hub every event goes through: the account service, the
API tokens, the dispatcher and the HTTP API emit there, and the cogs subscribe to it. With
METRICS_ENABLED, ``core.metrics`` (bot/metrics.py) holds this Core's Prometheus registry, served at
``GET /metrics``, and the stores are timed at the port.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol

from bot.accounts.crypto import TokenCipher, load_or_create_key
from bot.accounts.service import AccountService, TokenChecker
from bot.accounts.token_check import DiscordTokenChecker
from bot.api_tokens import ApiTokens
from bot.dispatch.backends.base import PixverseBackend
from bot.dispatch.backends.discord import DiscordBackend
from bot.dispatch.backends.simulated import SimulatedBackend
from bot.dispatch.clock import SharedClock
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import Job
from bot.errors import StartupError
from bot.events import Events
from bot.logs import register_secrets
from bot.pixverse.client import DiscordUserClient
from bot.settings import Settings
from bot.store import JOB_TOLD_TOPIC, JOBS_TOPIC, TOKENS_REVOKED_TOPIC, AccountStore, Database, JobStore, TokenStore
from bot.store.engines import open_database
from bot.store.key_check import forget_key_check, holds_tokens, verify_cipher
from bot.web.callbacks import ReplyPoster
from bot.web.routes import ApiContext, create_app
from bot.web.server import HttpLimits, LimitedServer

if TYPE_CHECKING:
    from bot.metrics import Metrics, StoreCounts

log = logging.getLogger(__name__)

# How often a sharded process looks for jobs placed for it by another process: as the only
# way (SQLite), or as the safety net behind NOTIFY (PostgreSQL).
PICKUP_POLL_SECONDS = 1.0
PICKUP_POLL_NOTIFIED_SECONDS = 5.0


def own_shards(settings: Settings) -> tuple[int, frozenset[int]] | None:
    """Which servers' jobs this process follows: those of its shards (SHARD_IDS); None for all."""
    if settings.shard_ids is None or settings.shard_count is None:
        return None
    return settings.shard_count, frozenset(settings.shard_ids)


class DiscordView(Protocol):
    """What the Core asks of the Discord side (the bot's gateway session and REST)."""

    async def channel_visible(self, guild_id: str, channel_id: str) -> bool | None:
        """True when the channel (or thread) is the server's and the bot sees it; None while
        the bot cannot tell (its gateway session has not delivered the servers yet, or Discord
        could not be asked about a server of another process's shard)."""

    def gateway_problem(self) -> str | None:
        """None while connected to the gateway, else the reason."""

    def read_history(self, channel_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        """A channel's messages after a snowflake, oldest first (recovery after a restart)."""

    # Optional: ``latency``, the gateway's heartbeat round trip in seconds (discord.py's
    # ``Client.latency``; NaN before connecting), read at each /metrics scrape.


class Core:
    """The bot's services; every attribute is set and typed once ``open`` returns."""

    def __init__(
        self,
        *,
        settings: Settings,
        discord: DiscordView,
        services: AsyncExitStack,
        resources: AsyncExitStack,
        db: Database,
        accounts: AccountService,
        api_tokens: TokenStore,
        dispatcher: Dispatcher,
        replies: ReplyPoster,
        http: LimitedServer | None,
        events: Events | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.events = events or Events()
        self.metrics = metrics  # None unless METRICS_ENABLED
        self.accounts = accounts
        self.api_tokens = api_tokens
        self.dispatcher = dispatcher
        self.replies = replies
        self.http = http  # None with HTTP_PORT=0
        self._services = services  # HTTP server, dispatcher, replyUrl poster
        self._resources = resources  # token checker, database
        self._closing = asyncio.Lock()
        self._discord = discord

    @classmethod
    async def open(cls, settings: Settings, discord: DiscordView, *,
                   token_checker: TokenChecker | None = None,
                   extra_routes: Sequence[tuple[str, str, Callable[..., Awaitable[Any]]]] = (),
                   backend: PixverseBackend | None = None,
                   gateway_latency: Callable[[], float | None] | None = None) -> Core:
        """Builds every service. For benchmarks and process tests only: ``token_checker``
        replaces Discord's /users/@me, ``extra_routes`` (method, path, handler) are served
        beside the API's, and ``backend`` replaces the PixVerse backend the settings choose.
        ``gateway_latency`` (seconds, for /metrics) defaults to the Discord view's ``latency``."""
        resources, services = AsyncExitStack(), AsyncExitStack()
        try:
            db = await open_database(settings)
            resources.push_async_callback(db.close)
            log.info("Database %s at schema version %s", db.name, await db.schema_version())
            # Leases and timeouts are compared across processes, perhaps machines: by the database's clock.
            clock = SharedClock(db.clock)
            await clock.sync()
            cipher = await _open_cipher(settings, db)
            stores = db.stores(cipher)
            if settings.metrics_token is not None:
                register_secrets(settings.metrics_token.get_secret_value(), pinned=True)
            metrics = None
            if settings.metrics_enabled:
                # prometheus_client is imported only here: with metrics off it costs no memory or start time.
                from bot.metrics import Metrics, timed_stores

                counted = stores

                async def store_counts() -> StoreCounts:
                    executing, waiting = await counted.jobs.live_counts()
                    in_rotation, out_of_rotation = await counted.accounts.rotation_counts()
                    return executing, waiting, in_rotation, out_of_rotation

                metrics = Metrics(store_counts=store_counts,
                                  gateway_latency=gateway_latency or (lambda: getattr(discord, "latency", math.nan)))
                stores = timed_stores(stores, metrics)
            events = Events(metrics=metrics)
            # Closed after the dispatcher and the replyUrl poster (pushed first): the subscribers'
            # last tasks (a job's end, an alert) get their moment.
            services.push_async_callback(events.close)

            if token_checker is None:
                checker = DiscordTokenChecker(settings.api_base_url)
                resources.push_async_callback(checker.close)
                token_checker = checker
            accounts = AccountService(stores.accounts, token_checker,
                                      max_concurrent_jobs=settings.pixverse_max_concurrent_jobs, events=events)
            api_tokens = ApiTokens(stores.tokens, events)
            backend = backend or _backend(settings, stores.jobs, stores.accounts, discord, clock)
            dispatcher = Dispatcher(
                stores.jobs, stores.accounts, backend, servers=stores.servers, clock=clock, clock_sync=clock.sync,
                queue_size=settings.pixverse_queue_size, job_timeout=settings.pixverse_job_timeout_seconds,
                shards=own_shards(settings),
                lease_interval=settings.lease_heartbeat_seconds, lease_ttl=settings.lease_expiry_seconds,
                pickup_interval=PICKUP_POLL_SECONDS, events=events,
            )
            # A process that hears of jobs placed for it at once (PostgreSQL's NOTIFY) polls
            # only as a safety net.
            if await db.listen(JOBS_TOPIC, dispatcher.pickup):
                dispatcher.pickup_interval = PICKUP_POLL_NOTIFIED_SECONDS
            # A revocation made through another process takes effect here at once (or within the
            # token cache's few seconds where the engine announces nothing).
            await db.listen(TOKENS_REVOKED_TOPIC, stores.tokens.forget)
            # A member's job changed by a process that does not follow its server is told to the one
            # that does (it holds the member's message); where the engine announces across processes.
            if await db.listen(JOB_TOLD_TOPIC, dispatcher.told):

                async def tell_elsewhere(job: Job) -> None:
                    await db.announce(JOB_TOLD_TOPIC, job.job_id)

                dispatcher.tell_elsewhere = tell_elsewhere

            async def reply_body(job: Job) -> dict:
                return await dispatcher.public_job(job, with_reply=True)

            replies = ReplyPoster(reply_body, allow_private=settings.reply_url_allow_private,
                                  told=dispatcher.final_shown)
            # Closed after the dispatcher (pushed first): its last notices still go out.
            services.push_async_callback(replies.close)
            services.push_async_callback(dispatcher.close)
            accounts.listeners.append(dispatcher)
            dispatcher.listeners.append(replies)

            core = cls(settings=settings, discord=discord, services=services, resources=resources, db=db,
                       accounts=accounts, api_tokens=api_tokens, dispatcher=dispatcher, replies=replies, http=None,
                       events=events, metrics=metrics)
            core.http = await core._serve_http(services, extra_routes)
        except BaseException:
            await services.aclose()
            await resources.aclose()
            raise
        return core

    async def stop_services(self) -> None:
        """Stops the HTTP server, the dispatcher and the replyUrl poster; the store stays open."""
        async with self._closing:
            await self._services.aclose()

    async def close(self) -> None:
        """Releases everything ``open`` built, in reverse order; a second call does nothing."""
        async with self._closing:
            await self._services.aclose()
            await self._resources.aclose()

    async def health_problem(self) -> str | None:
        """None when the database answers and takes writes, the dispatcher's sweep completes, and
        the gateway is connected."""
        try:
            await self.db.ping()
        except Exception as exc:
            return f"database does not answer ({type(exc).__name__})"
        # After a write refused for good (read-only, full disk, I/O error), unhealthy until a write
        # commits again.
        if self.db.write_problem is not None and not await self.db.probe_write():
            return "the database cannot be written (read-only, disk full or I/O error)"
        return self.dispatcher.stalled() or self._discord.gateway_problem()

    async def _serve_http(self, stack: AsyncExitStack, extra_routes) -> LimitedServer | None:
        settings = self.settings
        if settings.http_port == 0:
            log.info("HTTP API off (HTTP_PORT=0)")
            return None
        context = ApiContext(
            accounts=self.accounts,
            dispatcher=self.dispatcher,
            tokens=self.api_tokens,
            channel_visible=self._discord.channel_visible,
            health_problem=self.health_problem,
            reply_allow_private=settings.reply_url_allow_private,
            request_timeout=settings.http_request_timeout_seconds,
            events=self.events,
            metrics=self.metrics,
            metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
        )
        limits = HttpLimits(
            keepalive_timeout=settings.http_keepalive_timeout_seconds,
            request_timeout=settings.http_request_timeout_seconds,
            max_connections=settings.http_max_connections,
        )
        app = create_app(context)
        for method, path, handler in extra_routes:
            app.router.add_route(method, path, handler)
        server = LimitedServer(app, settings.http_host, settings.http_port, limits)
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(
                f"HTTP API could not listen on {settings.http_host}:{settings.http_port} ({exc.strerror or type(exc).__name__});"
                " set HTTP_PORT to a free port, or 0 to turn the API off"
            ) from None
        stack.push_async_callback(server.stop)
        log.info("HTTP API listening on http://%s:%s", settings.http_host, server.port)
        return server


async def _open_cipher(settings: Settings, db: Database) -> TokenCipher:
    configured = settings.token_encryption_key.get_secret_value() if settings.token_encryption_key else None
    generating = configured is None and not settings.key_file.exists()
    # A new key is made only for a database that holds no tokens: it could not decrypt them.
    key = load_or_create_key(configured, settings.key_file, may_create=not await holds_tokens(db))
    if generating:
        await forget_key_check(db)
    register_secrets(key, pinned=True)
    cipher = TokenCipher(key)
    if not await verify_cipher(db, cipher):
        sqlite = settings.database_url is None
        if await holds_tokens(db):
            restore = f" (or restore {settings.key_file})" if sqlite else ""
            raise StartupError(
                f"The token key in use cannot decrypt the tokens stored in {db.name}: "
                f"set TOKEN_ENCRYPTION_KEY to the key they were saved with{restore}", lasting=True,
            )
        # No token yet, but the database's key check was made with another key: another process (or
        # this one before) uses that key and would save tokens this key cannot read. Never replaced
        # here: a process starting beside one with the old key cannot tell it is there in time.
        use_file = (f", or unset it to use {settings.key_file}"
                    if sqlite and configured is not None and settings.key_file.exists() else "")
        raise StartupError(
            f"The database {db.name} was set up with another token key (it holds no account tokens yet): set"
            f" TOKEN_ENCRYPTION_KEY to that key{use_file}; every bot process on a database needs the same key",
            lasting=True,
        )
    return cipher


def _backend(settings: Settings, jobs: JobStore, repository: AccountStore,
             discord: DiscordView, clock: SharedClock) -> PixverseBackend:
    if settings.pixverse_backend == "simulated":
        log.warning("PIXVERSE_BACKEND=simulated: jobs are simulated in-process and generate no video")
        return SimulatedBackend(
            duration=settings.pixverse_simulated_duration_seconds,
            failure_rate=settings.pixverse_simulated_failure_rate,
            clock=clock,
        )
    return DiscordBackend(
        DiscordUserClient(
            settings.api_base_url,
            application_id=settings.pixverse_application_id,
            submit_interval=settings.pixverse_submit_interval_seconds,
        ),
        repository,
        jobs,
        discord.read_history,
        application_id=settings.pixverse_application_id,
    )
