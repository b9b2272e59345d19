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
from bot.tree import in_time, reply

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

BUTTONS_MEANING = {
    "requester": "only the member who asked for the job and server managers",
    "everyone": "every member of the server",
}


def describe_settings(settings: ServerSettings) -> str:
    alerts = (f"<#{settings.alerts_channel_id}> (an account leaving rotation, and coming back)"
              if settings.alerts_channel_id else "off (choose a channel with /pixverse-settings alerts:#channel)")
    return (f"Result buttons: **{settings.buttons}** ({BUTTONS_MEANING[settings.buttons]} may press them)\n"
            f"Alerts: {alerts}")


class SettingsCog(commands.Cog, name="Server settings"):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot

    async def _of_server(self, interaction: discord.Interaction, guild_id: str, channel_id: int) -> bool:
        """Whether the channel is one of the server's. The option's own server id cannot tell:
        discord.py gives a resolved channel the interaction's server, wherever it is. The server's
        channels are in the cache of the process that got its interaction; asked of Discord when not."""
        if interaction.guild is not None:
            return interaction.guild.get_channel(channel_id) is not None
        try:
            channel = await self.bot.fetch_channel(channel_id)
        except discord.HTTPException:
            return False
        guild = getattr(channel, "guild", None)
        return guild is not None and str(guild.id) == guild_id

    @staticmethod
    def _can_post(guild: discord.Guild | None, channel_id: int) -> bool:
        """False when the bot's cached permissions say it cannot post there; True when they allow
        it or are not known here (a server of another process's shard)."""
        channel = guild.get_channel(channel_id) if guild is not None else None
        if channel is None or guild.me is None:
            return True
        permissions = channel.permissions_for(guild.me)
        return permissions.view_channel and permissions.send_messages

    @app_commands.command(name="pixverse-settings", description="Show or change the bot's settings for this server")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(buttons="Who may press a result's buttons: the requester (and managers), or everyone",
                           alerts="Where the bot tells managers that an account left rotation or came back",
                           alerts_off="Stop the alerts")
    @app_commands.choices(buttons=[app_commands.Choice(name=value, value=value) for value in BUTTONS_SETTINGS])
    async def settings(self, interaction: discord.Interaction, buttons: str | None = None,
                       alerts: app_commands.AppCommandChannel | None = None, alerts_off: bool = False) -> None:
        guild_id = require_manager(interaction)
        servers = self.bot.core.dispatcher.servers
        if buttons is None and alerts is None and not alerts_off:
            await reply(interaction, describe_settings(await in_time(interaction, servers.get(guild_id), ephemeral=True)))
            return
        if buttons is not None and buttons not in BUTTONS_SETTINGS:
            raise ApiError(400, f"Param buttons ({echo(buttons)}) is not one of {', '.join(BUTTONS_SETTINGS)}")
        if alerts is not None and alerts_off:
            raise ApiError(400, "Choose an alerts channel or alerts_off, not both")
        if alerts is not None and alerts.type not in (discord.ChannelType.text, discord.ChannelType.news):
            raise ApiError(400, f"Param alerts (<#{alerts.id}>) is not a text channel")
        if alerts is not None and not await in_time(interaction, self._of_server(interaction, guild_id, alerts.id),
                                                    ephemeral=True):
            raise ApiError(400, f"Param alerts (<#{alerts.id}>) is not a channel of this server")
        if alerts is not None and not self._can_post(interaction.guild, alerts.id):
            raise ApiError(400, f"The bot cannot post in <#{alerts.id}>: it needs View Channel and Send Messages there")
        changes: dict = {"buttons": buttons}
        if alerts is not None or alerts_off:
            changes["alerts_channel_id"] = str(alerts.id) if alerts is not None else None
        saved = await in_time(interaction, servers.set(guild_id, **changes), ephemeral=True)
        await reply(interaction, "Saved. " + describe_settings(saved))


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(SettingsCog(bot))
