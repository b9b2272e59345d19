"""The HTTP API tokens as the commands and the routes use them: the store's, each change an event."""

from __future__ import annotations

from bot.events import API_TOKEN_CREATED, API_TOKEN_REVOKED, Events
from bot.logs import register_secrets
from bot.store import TokenStore
from bot.store.tokens import hash_token


def token_id(token: str) -> str:
    """How a token is named in logs: the first 12 hex digits of the SHA-256 the store keeps of it
    (never the token, nor anything it could be found again from)."""
    return hash_token(token)[:12]


class ApiTokens:
    """A :class:`TokenStore` that tells ``api_token.created`` and ``api_token.revoked``."""

    def __init__(self, store: TokenStore, events: Events) -> None:
        self.store = store
        self.events = events

    async def create(self, guild_id: str, created_by: str) -> str:
        token = await self.store.create(guild_id, created_by)
        register_secrets(token)  # shown once to its maker: never in a log line
        self.events.emit(API_TOKEN_CREATED, server=guild_id, token_id=token_id(token), by=created_by)
        return token

    async def guild_of(self, token: str) -> str | None:
        return await self.store.guild_of(token)

    async def revoke_all(self, guild_id: str) -> int:
        count = await self.store.revoke_all(guild_id)
        self.events.emit(API_TOKEN_REVOKED, server=guild_id, count=count)
        return count

    def forget(self, guild_id: str | None = None) -> None:
        self.store.forget(guild_id)
