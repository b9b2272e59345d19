"""The one place where an app command's failure becomes the member's reply."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.errors import INTERNAL_ERROR, ApiError, from_exception

log = logging.getLogger(__name__)

GUILD_ONLY = "This command works only in a server"


def format_error(error: ApiError) -> str:
    """``400 · text``, with the details on a second line when there are any."""
    text = f"{error.code} · {error.error}"
    if error.error_details:
        text += f"\n{error.error_details}"
    return text[:2000]


def to_api_error(error: BaseException) -> ApiError | None:
    """The domain error behind a discord.py error, or the equivalent of a known one."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, ApiError):
        return error
    if isinstance(error, app_commands.NoPrivateMessage):
        return ApiError(400, GUILD_ONLY)
    if isinstance(error, app_commands.MissingPermissions):
        return ApiError(401, "Unauthorized")
    if isinstance(error, app_commands.TransformerError):
        return ApiError(400, f"An option has a value of the wrong type ({str(error.value)[:100]})")
    if isinstance(error, (app_commands.CommandSignatureMismatch, app_commands.CommandNotFound)):
        # Discord's copy of the commands is older than the bot's; it catches up by itself.
        return ApiError(409, "This command was just updated; please try again in a minute")
    return from_exception(getattr(error, "original", error))


class UnexpectedError(app_commands.AppCommandError):
    """Anything that escaped discord.py's own error path, carried to on_error."""

    def __init__(self, original: Exception) -> None:
        super().__init__(type(original).__name__)
        self.original = original


class BotTree(app_commands.CommandTree):
    """Answers every failed command once, ephemerally, whatever state the interaction is in."""

    async def _call(self, interaction: discord.Interaction) -> None:
        # discord.py hands only AppCommandError to on_error; a malformed payload can raise
        # anything while it is parsed, and the member would then see "did not respond".
        try:
            await super()._call(interaction)
        except app_commands.AppCommandError:
            raise
        except Exception as exc:
            await self.on_error(interaction, UnexpectedError(exc))

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_failure(interaction, error)


async def answer_failure(interaction: discord.Interaction, error: BaseException) -> None:
    """The one error path: slash commands (via BotTree) and message buttons both use it."""
    api_error = to_api_error(error)
    command = _command_name(interaction)
    if api_error is None:
        original = getattr(error, "original", error)
        log.error("Unexpected error in /%s", command, exc_info=(type(original), original, original.__traceback__))
        api_error = ApiError(500, INTERNAL_ERROR)
    elif api_error.code >= 500:
        log.warning("/%s answered %s: %s", command, api_error.code, api_error.error)
    await send_error(interaction, api_error)


def _command_name(interaction: discord.Interaction) -> str:
    # interaction.command parses the payload, which may be the malformed thing that failed.
    try:
        if interaction.command:
            return interaction.command.qualified_name
    except Exception:
        pass
    data = interaction.data if isinstance(interaction.data, dict) else {}
    return str(data.get("name") or data.get("custom_id") or "?")[:100]


async def send_error(interaction: discord.Interaction, error: ApiError) -> None:
    if interaction.type is discord.InteractionType.autocomplete:
        # An autocomplete cannot show text; an empty list is the honest answer.
        if not interaction.response.is_done():
            await _quietly(interaction.response.autocomplete([]))
        return
    await reply(interaction, format_error(error))


async def reply(interaction: discord.Interaction, content: str) -> None:
    """An ephemeral reply whether or not the interaction was already answered or deferred."""
    content = content[:2000]
    mentions = discord.AllowedMentions.none()
    if interaction.response.is_done():
        await _quietly(interaction.followup.send(content, ephemeral=True, allowed_mentions=mentions))
    else:
        await _quietly(interaction.response.send_message(content, ephemeral=True, allowed_mentions=mentions))


async def _quietly(coro) -> None:
    try:
        await coro
    except discord.HTTPException as exc:
        # The interaction expired or was answered elsewhere: nothing left to tell the member.
        log.warning("Could not answer an interaction: %s %s", exc.status, exc.text or type(exc).__name__)
