"""The HTTP API's token commands: a server manager creates and revokes the server's API tokens."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.logs import register_secrets
from bot.slash import require_manager
from bot.tree import in_time, reply

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

log = logging.getLogger(__name__)


class ApiTokensCog(commands.Cog, name="API tokens"):
    """/pixverse-api-token and its revocation; the HTTP server itself is a Core service."""

    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot

    @app_commands.command(name="pixverse-api-token", description="Create an HTTP API token for this server")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def create_token(self, interaction: discord.Interaction) -> None:
        guild_id = require_manager(interaction)
        token = await in_time(interaction, self.bot.core.api_tokens.create(guild_id, str(interaction.user.id)),
                              ephemeral=True)
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
        count = await in_time(interaction, self.bot.core.api_tokens.revoke_all(guild_id), ephemeral=True)
        await reply(interaction, f"Revoked {count} HTTP API token{'s' if count != 1 else ''} of this server.")


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(ApiTokensCog(bot))
