"""The one place where an app command's failure becomes the member's reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import discord
from discord import app_commands

from bot.errors import INTERNAL_ERROR, ApiError, from_exception

log = logging.getLogger(__name__)

GUILD_ONLY = "This command works only in a server"

# Discord drops an interaction not answered within 3 s of its creation ("The application did not
# respond"): work still under way this long after it answers "thinking…" first.
ANSWER_WITHIN_SECONDS = 2.0

T = TypeVar("T")


async def in_time(interaction: discord.Interaction, work: Awaitable[T], *, ephemeral: bool) -> T:
    """The result of a command's work (the database's: a busy SQLite file waits up to 5 s, a
    PostgreSQL pool up to 10 s; a member's attachment from Discord's CDN), Discord's 3 s in mind: if the work has not finished
    ANSWER_WITHIN_SECONDS after the interaction was made, the command answers "thinking…" first
    (``ephemeral``: seen by the member alone) and what follows answers through it. If the work then
    fails, a public "thinking…" is deleted, so that the refusal reaches the member alone."""
    task = asyncio.ensure_future(work)
    # By Discord's clock, which this machine's may be off from: at least 0, then on its own.
    waited, began = max(0.0, (discord.utils.utcnow() - interaction.created_at).total_seconds()), time.monotonic()
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, ANSWER_WITHIN_SECONDS - waited))
    except BaseException:
        task.cancel()
        raise
    deferred = False
    if not done and not interaction.response.is_done():
        try:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            deferred = True
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # expired already, Discord unreachable: the work goes on, its answer may fail
            log.warning("Could not answer an interaction %.1f s after it was made: %s %s",
                        waited + time.monotonic() - began, getattr(exc, "status", None) or type(exc).__name__,
                        getattr(exc, "text", None) or "")
    try:
        return await task
    except Exception:
        if deferred and not ephemeral:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        raise


async def respond(interaction: discord.Interaction, content: str, **fields: Any) -> None:
    """A command's answer, through its "thinking…" when in_time answered that already."""
    if interaction.response.is_done():
        await interaction.followup.send(content, **fields)
    else:
        await interaction.response.send_message(content, **fields)


def format_error(error: ApiError) -> str:
    """``400 · text``, with the details on a second line when there are any."""
    text = f"{error.code} · {error.error}"
    if error.error_details:
        text += f"\n{error.error_details}"
    if error.retry_after is not None:  # the HTTP API's Retry-After, in words
        text += f"\nTry again in about {_duration(error.retry_after)}"
    return text[:2000]


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min"


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
    await _quietly(respond(interaction, content[:2000], ephemeral=True, allowed_mentions=discord.AllowedMentions.none()))


async def _quietly(coro) -> None:
    try:
        await coro
    except discord.HTTPException as exc:
        # The interaction expired or was answered elsewhere: nothing left to tell the member.
        log.warning("Could not answer an interaction: %s %s", exc.status, exc.text or type(exc).__name__)
