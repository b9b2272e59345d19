"""What a server's managers watch: alerts when an account leaves rotation or comes back (in the
channel chosen with /pixverse-settings alerts:#channel), and /pixverse-status."""

from __future__ import annotations

import logging
import statistics
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import escape_markdown

from bot.events import ACCOUNT_OUT_OF_ROTATION, ACCOUNT_RESET, ACCOUNT_SAVED
from bot.slash import MESSAGE_LIMIT, fit_lines, reason_lines, require_manager
from bot.tree import in_time, respond
from cogs.jobs.presenting import EMBED_DESCRIPTION, EMBED_FIELD_VALUE

if TYPE_CHECKING:
    from bot.discord_bot import PixverseBot

log = logging.getLogger(__name__)

DAY = 24 * 3600
FINAL_STATES = ("completed", "failed", "moderated", "cancelled", "timed_out")
WAITING_SHOWN = 10


def alert_text(name: str, fields: dict[str, Any]) -> str | None:
    """The alert for an event, or None when the event is not one managers are told of."""
    channel = fields.get("channel")
    if name == ACCOUNT_OUT_OF_ROTATION:
        reason = escape_markdown(str(fields.get("reason") or "no reason given"))
        return (f"⚠️ The PixVerse account of <#{channel}> left rotation: {reason}\n"
                "No job goes to it until a server manager fixes it (a new token with /pixverse-account, or"
                f" PixVerse's block lifted) and runs `/pixverse-account-reset channel:{channel}`.")[:MESSAGE_LIMIT]
    if name in (ACCOUNT_RESET, ACCOUNT_SAVED) and fields.get("back_in_rotation"):
        return f"✅ The PixVerse account of <#{channel}> is back in rotation."
    return None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class OperatorsCog(commands.Cog, name="Operators"):
    def __init__(self, bot: PixverseBot) -> None:
        self.bot = bot
        self._unsubscribe = None

    async def cog_load(self) -> None:
        self._unsubscribe = self.bot.core.events.subscribe(self._on_event)

    async def cog_unload(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    async def _on_event(self, name: str, fields: dict[str, Any]) -> None:
        """Posts the alert of an account event in the server's alerts channel, once per event."""
        text = alert_text(name, fields)
        if text is None or not fields.get("server"):
            return
        settings = await self.bot.core.dispatcher.servers.get(str(fields["server"]))
        if settings.alerts_channel_id is None:
            return
        guild = self.bot.get_guild(int(fields["server"]))
        if guild is not None and guild.get_channel(int(settings.alerts_channel_id)) is None:
            # Deleted since, or (saved before the settings checked it) another server's: never posted to.
            log.warning("The alerts channel %s of server %s is not one of its channels; no alert posted",
                        settings.alerts_channel_id, fields["server"])
            return
        channel = self.bot.get_partial_messageable(int(settings.alerts_channel_id), guild_id=int(fields["server"]))
        try:
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("Could not post an alert of server %s in channel %s (%s)", fields["server"],
                        settings.alerts_channel_id, exc.status)

    @app_commands.command(name="pixverse-status",
                          description="This server's PixVerse accounts, waiting jobs and the last day's jobs")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def status(self, interaction: discord.Interaction) -> None:
        guild_id = require_manager(interaction)
        dispatcher = self.bot.core.dispatcher
        async def read() -> tuple:
            return (await dispatcher.accounts.list(guild_id), await dispatcher.executing(guild_id),
                    await dispatcher.ended_since(guild_id, seconds=DAY))

        accounts, live, ended = await in_time(interaction, read(), ephemeral=True)
        executing: dict[str | None, int] = {}
        for job in live:
            if job.slot_held:
                executing[job.account_channel_id] = executing.get(job.account_channel_id, 0) + 1
        waiting = [job for job in live if job.queued]
        embed = discord.Embed(title="PixVerse in this server", colour=0x5865F2)
        lines = []
        for config in accounts:
            state = "in rotation"
            if not config.in_rotation:
                state = "out of rotation: " + escape_markdown(reason_lines(config.error or "no reason given",
                                                                           config.error_details)[0])
            lines.append(f"<#{config.channel_id}> · {executing.get(config.channel_id, 0)}/{config.max_jobs}"
                         f" executing · {state}")
        embed.description = fit_lines(f"**Accounts: {len(accounts)}**", lines or ["none configured"],
                                      limit=EMBED_DESCRIPTION)
        shown = [f"{n}. `{job.job_id}` · {job.verb.value}" for n, job in enumerate(waiting[:WAITING_SHOWN], 1)]
        if len(waiting) > WAITING_SHOWN:
            shown.append(f"… and {len(waiting) - WAITING_SHOWN} more")
        embed.add_field(name=f"Waiting: {len(waiting)}", value="\n".join(shown)[:EMBED_FIELD_VALUE] or "none",
                        inline=False)
        counts = " · ".join(f"{state.replace('_', ' ')} {ended.counts.get(state, 0)}" for state in FINAL_STATES)
        median = (f"median run time {_duration(statistics.median(ended.run_seconds))}" if ended.run_seconds
                  else "no completed job")
        embed.add_field(name="Last 24 hours", value=f"{counts}\n{median}", inline=False)
        await respond(
            interaction,
            f"PixVerse status: {len(accounts)} accounts, {sum(executing.values())} executing, {len(waiting)} waiting",
            embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: PixverseBot) -> None:
    await bot.add_cog(OperatorsCog(bot))
