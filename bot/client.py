"""The bot: startup work in setup_hook, resources released in close()."""

from __future__ import annotations

import gc
import hashlib
import json
import logging

import discord
import yarl
from discord.ext import commands

from bot import db
from bot.accounts.crypto import TokenCipher, load_or_create_key
from bot.accounts.repository import AccountRepository, forget_key_check, holds_tokens, verify_cipher
from bot.accounts.service import AccountService
from bot.accounts.token_check import DiscordTokenChecker
from bot.dispatch.backends.base import PixverseBackend
from bot.dispatch.backends.discord import DiscordBackend
from bot.dispatch.backends.simulated import SimulatedBackend
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.jobs import JobRepository
from bot.pixverse.client import DiscordUserClient
from bot.errors import StartupError
from bot.logs import register_secrets
from bot.settings import Settings
from bot.tree import BotTree

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.accounts", "cogs.jobs", "cogs.http_api")
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
    """
    gc.collect()
    gc.freeze()


class PixverseBot(commands.Bot):
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
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=BotTree,
            allowed_mentions=discord.AllowedMentions.none(),
            **client_options,
        )
        self.settings = settings
        self.db: db.Database | None = None
        self.token_checker: DiscordTokenChecker | None = None
        self.accounts: AccountService
        self.dispatcher: Dispatcher | None = None
        self._dispatcher_started = False

    async def setup_hook(self) -> None:
        settings = self.settings
        self.db = await db.Database.open(settings.database_path)
        log.info("Database %s at schema version %s", settings.database_path, await self.db.schema_version())

        configured = settings.token_encryption_key.get_secret_value() if settings.token_encryption_key else None
        generating = configured is None and not settings.key_file.exists()
        # A new key is made only for a database that holds no tokens: it could not decrypt them.
        key = load_or_create_key(configured, settings.key_file, may_create=not await holds_tokens(self.db))
        if generating:
            await forget_key_check(self.db)
        register_secrets(key, pinned=True)
        cipher = TokenCipher(key)
        if not await verify_cipher(self.db, cipher):
            raise StartupError(
                f"The token key in use cannot decrypt the tokens stored in {settings.database_path}: "
                f"set TOKEN_ENCRYPTION_KEY to the key they were saved with (or restore {settings.key_file})"
            )

        self.token_checker = DiscordTokenChecker(settings.api_base_url)
        repository = AccountRepository(self.db, cipher)
        self.accounts = AccountService(
            repository, self.token_checker, max_concurrent_jobs=settings.pixverse_max_concurrent_jobs
        )
        self.dispatcher = Dispatcher(
            self.db,
            repository,
            self._backend(repository),
            queue_size=settings.pixverse_queue_size,
            job_timeout=settings.pixverse_job_timeout_seconds,
        )
        self.accounts.listeners.append(self.dispatcher)
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except commands.ExtensionFailed as exc:
                if isinstance(exc.original, StartupError):
                    raise exc.original from None
                raise
        await self.sync_commands_if_changed()
        freeze_startup_objects()

    def _backend(self, repository: AccountRepository) -> PixverseBackend:
        settings = self.settings
        if settings.pixverse_backend == "simulated":
            log.warning("PIXVERSE_BACKEND=simulated: jobs are simulated in-process and generate no video")
            return SimulatedBackend(
                duration=settings.pixverse_simulated_duration_seconds,
                failure_rate=settings.pixverse_simulated_failure_rate,
            )
        assert self.db is not None
        return DiscordBackend(
            DiscordUserClient(
                settings.api_base_url,
                application_id=settings.pixverse_application_id,
                submit_interval=settings.pixverse_submit_interval_seconds,
            ),
            repository,
            JobRepository(self.db),
            self.read_history,
            application_id=settings.pixverse_application_id,
        )

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
        assert self.db is not None
        fingerprint = self.commands_fingerprint()
        if await self.db.get_meta(COMMANDS_FINGERPRINT_META) == fingerprint:
            log.info("Slash commands unchanged since the last registration; not syncing")
            return False
        synced = await self.tree.sync()
        await self.db.set_meta(COMMANDS_FINGERPRINT_META, fingerprint)
        log.info("Registered %d slash commands with Discord", len(synced))
        return True

    async def on_ready(self) -> None:
        log.info("Connected as %s (%s) in %d servers", self.user, self.user.id if self.user else "?", len(self.guilds))
        # Recovery reads channel history, so it starts once the gateway is connected:
        # anything PixVerse posts from now on arrives as events, nothing falls in between.
        if self.dispatcher is not None and not self._dispatcher_started:
            self._dispatcher_started = True
            self.dispatcher.start_soon()

    async def close(self) -> None:
        # Reverse order of setup: the HTTP API (no new requests), the dispatcher (its lease,
        # its tasks), then Discord, then the database that all of them used.
        http_api = self.get_cog("HTTP API")
        if http_api is not None:
            await http_api.stop()
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is not None:
            await dispatcher.close()
        if http_api is not None:
            await http_api.replies.close()  # after the dispatcher's last notices
        await super().close()
        # discord.py may call close() again from its connect loop; take each resource
        # before the first await so only one caller releases it.
        checker, self.token_checker = self.token_checker, None
        database, self.db = self.db, None
        if checker is not None:
            await checker.close()
        if database is not None:
            await database.close()
