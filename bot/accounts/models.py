"""What is stored about an account, and how it is shown."""

from __future__ import annotations

from dataclasses import dataclass

from bot.accounts.crypto import mask_token


@dataclass(frozen=True)
class AccountConfig:
    """One channel's PixVerse account, as stored. Holds no token in clear."""

    guild_id: str
    channel_id: str
    discord_user_id: str
    token_last4: str
    max_jobs: int
    created_at: float  # seconds since the Unix epoch
    updated_at: float
    in_rotation: bool = True
    error: str | None = None
    error_details: str | None = None

    @property
    def masked_token(self) -> str:
        return mask_token(self.token_last4)

    def to_public(self) -> dict[str, object]:
        """The useapi model of a configuration: the token masked, never more."""
        public: dict[str, object] = {
            "discord": self.masked_token,
            "server": self.guild_id,
            "channel": self.channel_id,
            "maxJobs": self.max_jobs,
        }
        if self.error:
            public["error"] = self.error
        if self.error_details:
            public["errorDetails"] = self.error_details
        return public
