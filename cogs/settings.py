"""/pixverse-settings: a server manager's choices about the bot in this server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.accounts.validation import echo
from bot.errors import ApiError
from bot.slash import require_manager
from bot.store import BUTTONS_SETTINGS, ServerSettings
from bot.tree import reply

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

BUTTONS_MEANING = {
    "requester": "only the member who asked for the job and server managers",
    "everyone": "every member of the server",
}


def describe_settings(settings: ServerSettings) -> str:
    return f"Result buttons: **{settings.buttons}** ({BUTTONS_MEANING[settings.buttons]} may press them)"


class SettingsCog(commands.Cog, name="Server settings"):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot

    @app_commands.command(name="pixverse-settings", description="Show or change the bot's settings for this server")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(buttons="Who may press a result's buttons: the requester (and managers), or everyone")
    @app_commands.choices(buttons=[app_commands.Choice(name=value, value=value) for value in BUTTONS_SETTINGS])
    async def settings(self, interaction: discord.Interaction, buttons: str | None = None) -> None:
        guild_id = require_manager(interaction)
        servers = self.bot.core.dispatcher.servers
        if buttons is None:
            await reply(interaction, describe_settings(await servers.get(guild_id)))
            return
        if buttons not in BUTTONS_SETTINGS:
            raise ApiError(400, f"Param buttons ({echo(buttons)}) is not one of {', '.join(BUTTONS_SETTINGS)}")
        await reply(interaction, "Saved. " + describe_settings(await servers.set(guild_id, buttons=buttons)))


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(SettingsCog(bot))
