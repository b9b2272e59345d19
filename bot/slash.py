"""Helpers the cogs share to keep each command a thin adapter over the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands

from bot.errors import ApiError, unauthorized
from bot.tree import GUILD_ONLY


class CoreValidatedCommand(app_commands.Command):
    """A slash command whose options Discord's client is told are required (with ranges),
    while the bot still accepts them missing or out of range.

    Discord's client enforces `required`, `min_value` and `max_value`; a modified client
    does not. discord.py would answer a missing required option with a generic signature
    error, so the Python parameters stay optional and the core validation answers every
    case with the endpoint's own texts.
    """

    def __init__(self, *args: Any, advertised: dict[str, dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.advertised = advertised

    def to_dict(self, tree: app_commands.CommandTree) -> dict[str, Any]:
        payload = super().to_dict(tree)
        for option in payload.get("options", []):
            option.update(self.advertised.get(option["name"], {}))
        # Discord wants required options first; keep the declared order otherwise.
        payload["options"] = sorted(payload.get("options", []), key=lambda o: not o.get("required", False))
        return payload


def core_validated_command(
    *, name: str, description: str, advertised: dict[str, dict[str, Any]]
) -> Callable[[Callable[..., Any]], CoreValidatedCommand]:
    def decorator(func: Callable[..., Any]) -> CoreValidatedCommand:
        return CoreValidatedCommand(name=name, description=description, callback=func, advertised=advertised)

    return decorator


def require_guild(interaction: discord.Interaction) -> str:
    """The id of the server the command runs in; a 400 in a DM (guild_only is only a hint)."""
    if interaction.guild_id is None:
        raise ApiError(400, GUILD_ONLY)
    return str(interaction.guild_id)


def require_manager(interaction: discord.Interaction) -> str:
    """The server id, after checking Manage Server at run time.

    default_member_permissions is only a default that server admins can change, so the
    bot checks the invoker's permissions itself.
    """
    guild_id = require_guild(interaction)
    if not interaction.permissions.manage_guild:
        raise unauthorized()
    return guild_id


def choice_label(name: str | None, value: str) -> str:
    label = f"{name} ({value})" if name else value
    return label[:100]


MESSAGE_LIMIT = 2000


def fit_lines(header: str, lines: list[str], limit: int = MESSAGE_LIMIT) -> str:
    """The header and as many lines as fit in one Discord message, then "… and N more"."""
    kept, size = [header], len(header)
    for index, line in enumerate(lines):
        after = len(lines) - index - 1
        needed = size + 1 + len(line) + (len(f"\n… and {after} more") if after else 0)
        if needed > limit:
            kept.append(f"… and {len(lines) - index} more")
            break
        kept.append(line)
        size += 1 + len(line)
    return "\n".join(kept)


def reason_lines(error: str | None, details: str | None) -> list[str]:
    """Why a job ended (or an account left rotation), each text once: the details often repeat the
    error as their first line (PixVerse's embed title, then its description)."""
    lines = [error] if error else []
    if details:
        rest = details[len(error):].lstrip("\n :") if error and details.startswith(error) else details
        if rest and rest != error:
            lines.append(rest)
    return lines
