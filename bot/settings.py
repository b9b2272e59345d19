"""Settings from the environment or a ``.env`` file, validated once at startup."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Every knob of the bot; the names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr
    database_path: Path = Path("data/pixverse.db")
    pixverse_max_concurrent_jobs: int = Field(default=10, ge=1)
    token_encryption_key: SecretStr | None = None
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    log_level: LogLevel = "INFO"

    # The HTTP API (useapi paths); port 0 turns it off.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Limits a hostile client cannot wear down: a silent keep-alive connection is closed after
    # this long; a request's head (and again its body) must arrive within the request timeout;
    # past the connection cap a new connection gets a 503 at once.
    http_keepalive_timeout_seconds: float = Field(default=15, gt=0, le=3600)
    http_request_timeout_seconds: float = Field(default=10, gt=0, le=600)
    http_max_connections: int = Field(default=512, ge=1, le=100_000)
    # replyUrl may point at private/loopback addresses (only for a trusted local receiver).
    reply_url_allow_private: bool = False

    # The dispatcher.
    pixverse_backend: Literal["discord", "simulated"] = "discord"
    pixverse_application_id: str | None = Field(default=None, pattern=r"^[0-9]{17,20}$")
    pixverse_queue_size: int = Field(default=0, ge=0, le=1000)
    pixverse_job_timeout_seconds: float = Field(default=900, gt=0)
    pixverse_submit_interval_seconds: float = Field(default=2, ge=0)
    pixverse_simulated_duration_seconds: float = Field(default=20, ge=0)
    pixverse_simulated_failure_rate: float = Field(default=0, ge=0, le=1)

    @field_validator("discord_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("token_encryption_key", "pixverse_application_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `TOKEN_ENCRYPTION_KEY=` in a .env file means "not set", as in the README.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("discord_api_base_url", "discord_gateway_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if "://" not in value:
            raise ValueError("must be an absolute URL")
        return value

    @property
    def api_base_url(self) -> str:
        """The REST base without a trailing slash, as discord.py's Route expects."""
        return self.discord_api_base_url.rstrip("/")

    @property
    def key_file(self) -> Path:
        """Where a generated token key lives: beside the database."""
        return self.database_path.with_name(self.database_path.name + ".key")
