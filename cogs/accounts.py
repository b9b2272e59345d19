"""/pixverse-account, /pixverse-accounts, /pixverse-account-delete: the useapi account paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import escape_markdown

from bot.accounts.models import AccountConfig
from bot.accounts.validation import validate_channel_param
from bot.slash import choice_label, core_validated_command, fit_lines, reason_lines, require_manager
from bot.tree import in_time, reply

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

def describe_config(config: AccountConfig) -> str:
    text = (
        f"<#{config.channel_id}> · channel `{config.channel_id}` · maxJobs `{config.max_jobs}`"
        f" · discord {escape_markdown(config.masked_token)}"
    )
    if not config.in_rotation:
        error, *details = reason_lines(config.error or "no reason given", config.error_details)
        text += f" · out of rotation: {escape_markdown(error)}"
        if details:
            text += f" ({escape_markdown(details[0])})"
    return text


def saved_text(config: AccountConfig) -> str:
    return (
        f"Saved the PixVerse account configuration for <#{config.channel_id}>.\n"
        f"server: `{config.guild_id}`\n"
        f"channel: `{config.channel_id}`\n"
        f"maxJobs: `{config.max_jobs}`\n"
        f"discord: {escape_markdown(config.masked_token)}"
    )


def list_text(configs: list[AccountConfig]) -> str:
    return fit_lines(
        f"PixVerse account configurations in this server: {len(configs)}", [describe_config(c) for c in configs]
    )


class AccountsCog(commands.Cog):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot
        # Discord's client should offer what the bot accepts: maxJobs up to the setting.
        self.account.advertised = {
            **self.account.advertised,
            "maxjobs": {"required": True, "min_value": 1, "max_value": bot.settings.pixverse_max_concurrent_jobs},
        }

    @property
    def service(self):
        return self.bot.core.accounts

    @core_validated_command(
        name="pixverse-account",
        description="Create or update the PixVerse account used in this channel",
        advertised={
            "discord": {"required": True},
            "server": {"required": True},
            "channel": {"required": True},
            "maxjobs": {"required": True, "min_value": 1, "max_value": 10},
        },
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.rename(token="discord")
    @app_commands.describe(
        token="Discord user token of the PixVerse account (a dedicated account)",
        server="Id of this Discord server",
        channel="Id of this channel, where the account will run PixVerse",
        maxjobs="How many jobs this account may run at once",
    )
    async def account(
        self,
        interaction: discord.Interaction,
        token: str | None = None,
        server: str | None = None,
        channel: str | None = None,
        maxjobs: int | None = None,
    ) -> None:
        guild_id = require_manager(interaction)
        request = await in_time(interaction, self.service.prepare(
            {"discord": token, "server": server, "channel": channel, "maxJobs": maxjobs},
            path_channel=str(interaction.channel_id),
            guild_id=guild_id,
        ), ephemeral=True)
        # The token check asks Discord and can take longer than the 3 s Discord allows.
        if not interaction.response.is_done():  # in_time did not answer already
            await interaction.response.defer(ephemeral=True, thinking=True)
        config = await self.service.save(request)
        await reply(interaction, saved_text(config))

    @account.autocomplete("server")
    async def _server_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        guild_id = str(interaction.guild_id)
        name = interaction.guild.name if interaction.guild else None
        return [app_commands.Choice(name=choice_label(name, guild_id), value=guild_id)]

    @account.autocomplete("channel")
    async def _channel_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        channel_id = str(interaction.channel_id)
        name = getattr(interaction.channel, "name", None)
        return [app_commands.Choice(name=choice_label(f"#{name}" if name else None, channel_id), value=channel_id)]

    @app_commands.command(name="pixverse-accounts", description="Show this server's PixVerse account configurations")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(channel="Only this channel's configuration (channel id)")
    async def accounts(self, interaction: discord.Interaction, channel: str | None = None) -> None:
        guild_id = require_manager(interaction)
        if channel is None:
            configs = await in_time(interaction, self.service.list(guild_id), ephemeral=True)
        else:
            configs = [await in_time(interaction, self.service.get(guild_id, validate_channel_param(channel)),
                                     ephemeral=True)]
        await reply(interaction, list_text(configs))

    @core_validated_command(
        name="pixverse-account-delete",
        description="Delete a channel's PixVerse account configuration",
        advertised={"channel": {"required": True}},
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(channel="Channel id of the configuration to delete")
    async def delete(self, interaction: discord.Interaction, channel: str | None = None) -> None:
        guild_id = require_manager(interaction)
        channel_id = validate_channel_param(channel)
        await in_time(interaction, self.service.delete(guild_id, channel_id), ephemeral=True)
        await reply(
            interaction,
            f"Deleted the PixVerse account configuration of <#{channel_id}> (`{channel_id}`);"
            " its Discord token can now be used elsewhere.",
        )

    @core_validated_command(
        name="pixverse-account-reset",
        description="Put a PixVerse account that left rotation back to work",
        advertised={"channel": {"required": True}},
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(channel="Channel id of the account to put back")
    async def reset(self, interaction: discord.Interaction, channel: str | None = None) -> None:
        guild_id = require_manager(interaction)
        config = await in_time(interaction, self.service.reset(guild_id, validate_channel_param(channel)),
                               ephemeral=True)
        await reply(interaction, f"The PixVerse account of <#{config.channel_id}> is back in rotation.\n{describe_config(config)}")

    @accounts.autocomplete("channel")
    @delete.autocomplete("channel")
    @reset.autocomplete("channel")
    async def _configured_channels(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            return []
        configs = await self.service.repository.list(str(interaction.guild_id))
        choices = []
        for config in configs:
            channel = interaction.guild.get_channel(int(config.channel_id)) if interaction.guild else None
            label = choice_label(f"#{channel.name}" if channel else None, config.channel_id)
            if current.strip() in label:
                choices.append(app_commands.Choice(name=label, value=config.channel_id))
        return choices[:25]


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(AccountsCog(bot))
