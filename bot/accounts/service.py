"""Account use cases shared by the slash commands and the HTTP API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from bot.accounts.models import AccountConfig
from bot.store import AccountStore, ChannelOwnedElsewhere, DuplicateAccount
from bot.accounts.validation import AccountRequest, echo, validate_account
from bot.errors import ApiError, bad_request, not_found
from bot.events import ACCOUNT_DELETED, ACCOUNT_RESET, ACCOUNT_SAVED, Events
from bot.logs import register_secrets

log = logging.getLogger(__name__)

OTHER_SERVER = "This Discord account is already configured in another server"


class TokenChecker(Protocol):
    async def user_id(self, token: str) -> str: ...


class AccountListener(Protocol):
    """Told when accounts change, whichever interface changed them (the dispatcher listens)."""

    async def account_available(self, guild_id: str) -> None: ...

    async def account_removed(self, guild_id: str, channel_id: str, *, reason: str) -> None: ...


class AccountService:
    def __init__(self, repository: AccountStore, checker: TokenChecker, *, max_concurrent_jobs: int,
                 events: Events | None = None) -> None:
        self.repository = repository
        self._checker = checker
        self._max_concurrent_jobs = max_concurrent_jobs
        self.listeners: list[AccountListener] = []
        self.events = events or Events()  # account.saved, account.deleted, account.reset

    @property
    def max_concurrent_jobs(self) -> int:
        """The maxJobs limit (PIXVERSE_MAX_CONCURRENT_JOBS)."""
        return self._max_concurrent_jobs

    async def prepare(self, body: Mapping[str, Any], *, path_channel: str, guild_id: str) -> AccountRequest:
        """Rules 1–8: everything that is fast. Callers defer their reply after this step."""
        request = validate_account(
            body, path_channel=path_channel, guild_id=guild_id, max_concurrent_jobs=self._max_concurrent_jobs
        )
        other = await self.repository.find_by_token(request.discord)
        if other is not None and other.channel_id != request.channel:
            raise self._duplicate(other, request.server)
        return request

    async def save(self, request: AccountRequest) -> AccountConfig:
        """The token check with Discord, then the write. Nothing is stored on any failure."""
        user_id = await self._checker.user_id(request.discord)
        # Discord accepted it: a real credential from here on, masked in every log line.
        # (Only now: registering every submitted value let a client grow the redactor.)
        register_secrets(request.discord)
        other = await self.repository.find_by_user(user_id)
        if other is not None and other.channel_id != request.channel:
            # Another token of the same Discord user: PixVerse counts jobs per user.
            if other.guild_id != request.server:
                raise bad_request(OTHER_SERVER)
            raise bad_request(f"Channel {other.channel_id} configuration has same discord account")
        # What was there before, for the event: a new configuration, or one put back in rotation.
        before = await self.repository.get(request.server, request.channel)
        try:
            config = await self.repository.upsert(
                guild_id=request.server,
                channel_id=request.channel,
                token=request.discord,
                discord_user_id=user_id,
                max_jobs=request.max_jobs,
            )
        except DuplicateAccount as exc:
            raise self._duplicate(exc.other, request.server) from None
        except ChannelOwnedElsewhere:
            raise bad_request(
                f"Required param channel ({echo(request.channel)}) is configured by another Discord server"
            ) from None
        self.events.emit(ACCOUNT_SAVED, server=config.guild_id, channel=config.channel_id, max_jobs=config.max_jobs,
                         created=before is None, back_in_rotation=before is not None and not before.in_rotation)
        # Saving puts the account (back) in rotation: waiting jobs may use it now.
        await self._tell(lambda listener: listener.account_available(config.guild_id))
        return config

    @staticmethod
    def _duplicate(other: AccountConfig, guild_id: str) -> ApiError:
        if other.guild_id != guild_id:
            return bad_request(OTHER_SERVER)
        return bad_request(f"Channel {other.channel_id} configuration has same discord value")

    async def list(self, guild_id: str) -> list[AccountConfig]:
        configs = await self.repository.list(guild_id)
        if not configs:
            raise not_found()
        return configs

    async def get(self, guild_id: str, channel_id: str) -> AccountConfig:
        config = await self.repository.get(guild_id, channel_id)
        if config is None:
            raise not_found()
        return config

    async def delete(self, guild_id: str, channel_id: str) -> None:
        if not await self.repository.delete(guild_id, channel_id):
            raise not_found()
        self.events.emit(ACCOUNT_DELETED, server=guild_id, channel=channel_id)
        await self._tell(
            lambda listener: listener.account_removed(guild_id, channel_id, reason="The PixVerse account was deleted")
        )

    async def reset(self, guild_id: str, channel_id: str) -> AccountConfig:
        """Puts an account that left rotation back, clearing its error."""
        before = await self.repository.get(guild_id, channel_id)
        if before is None or not await self.repository.set_rotation(guild_id, channel_id, in_rotation=True):
            raise not_found()
        self.events.emit(ACCOUNT_RESET, server=guild_id, channel=channel_id, back_in_rotation=not before.in_rotation)
        await self._tell(lambda listener: listener.account_available(guild_id))
        return await self.get(guild_id, channel_id)

    async def _tell(self, notify: Callable[[AccountListener], Awaitable[None]]) -> None:
        """Tells every listener of a change that is committed already.

        A listener's failure is logged, not answered: the caller's change was made, and
        telling them otherwise would have them retry something done. What the dispatcher
        missed, its sweep catches up: waiting jobs get the free slots, and the jobs of a
        deleted account end at their timeout instead of at once.
        """
        for listener in self.listeners:
            try:
                await notify(listener)
            except Exception:
                log.exception("Telling %s of an account change failed; the change itself is saved",
                              type(listener).__name__)
