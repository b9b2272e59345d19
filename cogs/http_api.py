"""The HTTP API server, started and stopped with the bot, and its API-token commands."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.slash import require_manager
from bot.dispatch.models import Job
from bot.errors import StartupError
from bot.web.routes import ApiContext, create_app
from bot.web.callbacks import ReplyPoster
from bot.web.server import HttpLimits, LimitedServer
from bot.web.tokens import ApiTokenRepository
from bot.logs import register_secrets
from bot.tree import reply

if TYPE_CHECKING:
    from bot.client import PixverseBot

log = logging.getLogger(__name__)


class HttpApiCog(commands.Cog, name="HTTP API"):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot
        self.tokens = ApiTokenRepository(bot.db)
        self.server: LimitedServer | None = None
        # Kept directly: at shutdown bot.dispatcher is gone before the last replies are sent.
        self.dispatcher = bot.dispatcher
        self.replies = ReplyPoster(self._public_job, allow_private=bot.settings.reply_url_allow_private)
        # A fresh READY after the first (a session that could not be resumed) empties
        # discord.py's cache while is_ready() stays true, until the servers are streamed in.
        self._reloading_servers = False

    async def cog_load(self) -> None:
        self.bot.dispatcher.listeners.append(self.replies)
        settings = self.bot.settings
        if settings.http_port == 0:
            log.info("HTTP API off (HTTP_PORT=0)")
            return
        context = ApiContext(
            accounts=self.bot.accounts,
            dispatcher=self.bot.dispatcher,
            tokens=self.tokens,
            channel_visible=self._channel_visible,
            health_problem=self._health_problem,
            reply_allow_private=settings.reply_url_allow_private,
            request_timeout=settings.http_request_timeout_seconds,
        )
        limits = HttpLimits(
            keepalive_timeout=settings.http_keepalive_timeout_seconds,
            request_timeout=settings.http_request_timeout_seconds,
            max_connections=settings.http_max_connections,
        )
        server = LimitedServer(create_app(context), settings.http_host, settings.http_port, limits)
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(
                f"HTTP API could not listen on {settings.http_host}:{settings.http_port} ({exc.strerror});"
                " set HTTP_PORT to a free port, or 0 to turn the API off"
            ) from None
        self.server = server
        log.info("HTTP API listening on http://%s:%s", settings.http_host, server.port)

    async def stop(self) -> None:
        """Stops serving (first thing at shutdown, so no request reaches a closing core)."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def cog_unload(self) -> None:
        if self.bot.dispatcher is not None and self.replies in self.bot.dispatcher.listeners:
            self.bot.dispatcher.listeners.remove(self.replies)
        await self.stop()
        await self.replies.close()

    @commands.Cog.listener()
    async def on_connect(self) -> None:
        # Dispatched on every fresh READY (never on a resume, which keeps the cache).
        if self.bot.is_ready():
            self._reloading_servers = True

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self._reloading_servers = False

    def _channel_visible(self, guild_id: str, channel_id: str) -> bool | None:
        # The API listens from setup_hook on, before the gateway has delivered the servers.
        if not self.bot.is_ready() or self._reloading_servers:
            return None
        guild = self.bot.get_guild(int(guild_id))
        return guild is not None and guild.get_channel_or_thread(int(channel_id)) is not None

    async def _health_problem(self) -> str | None:
        if self.bot.db is None:
            return "database closed"
        try:
            await self.bot.db.fetchone("SELECT 1")
        except Exception as exc:
            return f"database does not answer ({type(exc).__name__})"
        # After a failed write (full disk, I/O error), unhealthy until a write commits again.
        if self.bot.db.write_problem is not None and not await self.bot.db.probe_write():
            return "the database cannot be written (disk full or I/O error)"
        # is_ready() stays true while discord.py reconnects: ask the socket itself.
        if self.bot.is_closed() or not self.bot.is_ready() or not getattr(self.bot.ws, "open", False):
            return "not connected to the Discord gateway"
        return None

    async def _public_job(self, job: Job) -> dict:
        return {**await self.dispatcher.public_job(job, with_reply=True), "code": 200}

    @app_commands.command(name="pixverse-api-token", description="Create an HTTP API token for this server")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def create_token(self, interaction: discord.Interaction) -> None:
        guild_id = require_manager(interaction)
        token = await self.tokens.create(guild_id, str(interaction.user.id))
        register_secrets(token)
        await reply(
            interaction,
            "New HTTP API token for this server. It is shown only now; keep it secret:\n"
            f"```\n{token}\n```\nUse it as `Authorization: Bearer <token>`. "
            "`/pixverse-api-token-revoke` revokes this server's tokens.",
        )

    @app_commands.command(name="pixverse-api-token-revoke", description="Revoke every HTTP API token of this server")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def revoke_tokens(self, interaction: discord.Interaction) -> None:
        guild_id = require_manager(interaction)
        count = await self.tokens.revoke_all(guild_id)
        await reply(interaction, f"Revoked {count} HTTP API token{'s' if count != 1 else ''} of this server.")


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(HttpApiCog(bot))
