"""Settings from the environment or a ``.env`` file, validated once at startup."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import NOT_A_FERNET_KEY
from bot.shards import shard_of

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Every knob of the bot; the names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr
    database_path: Path = Path("data/pixverse.db")
    # Unset: SQLite at DATABASE_PATH. postgresql://user:password@host:port/dbname: PostgreSQL,
    # shared by every bot process (a secret: it may carry the password).
    database_url: SecretStr | None = None
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    pixverse_max_concurrent_jobs: int = Field(default=10, ge=1)
    token_encryption_key: SecretStr | None = None
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    # Each network step of startup (a request to Discord, the gateway's first READY) must end
    # within this many seconds, or the bot stops with a line naming it (exit code 1).
    discord_connect_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    log_level: LogLevel = "INFO"
    # text: one line per record; json: one JSON object per line (ts, level, logger, event, message, keys).
    log_format: Literal["text", "json"] = "text"
    # GET /metrics on the HTTP API (Prometheus' text format); with a token, only for
    # "Authorization: Bearer <METRICS_TOKEN>".
    metrics_enabled: bool = False
    metrics_token: SecretStr | None = None

    # Gateway shards. Both unset: every shard in this process, as many as Discord recommends.
    # SHARD_COUNT alone: that many, all here. SHARD_IDS (comma-separated) with SHARD_COUNT: these
    # shards here, the others in other processes sharing the database.
    shard_count: int | None = Field(default=None, ge=1, le=100_000)
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = None  # "0,1" as written, not JSON
    # Leases: a process renews its own this often; one not renewed for this long is dead, and
    # another process takes over its jobs.
    lease_heartbeat_seconds: float = Field(default=10, gt=0, le=3600)
    lease_expiry_seconds: float = Field(default=30, gt=0, le=86400)

    # The HTTP API (useapi paths); port 0 turns it off.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # In a container (the image sets 8080): the port the API listens on whenever HTTP_PORT is not 0;
    # HTTP_PORT then stays the on/off switch and the port Docker publishes on the host.
    http_container_port: int | None = Field(default=None, ge=1, le=65535)
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

    # Members' status messages. A job's message is the reply to the member's command while
    # Discord lets the bot edit it (15 minutes from the command; this much of them, a margin kept), then a message in the channel.
    # Edits of one channel's messages: at most this many per window, as Discord's channel limit.
    interaction_window_seconds: float = Field(default=840, gt=0, le=870)
    status_channel_edits: int = Field(default=5, ge=1, le=100)
    status_channel_window_seconds: float = Field(default=5, gt=0, le=60)

    @field_validator("discord_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("database_url", "shard_count", "shard_ids", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the URL: it may hold the password.
        if value is None:
            return None
        url = value.get_secret_value().strip()
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must be a postgresql:// URL (postgresql://user:password@host:5432/dbname);"
                " leave it unset for SQLite at DATABASE_PATH"
            )
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("is not a valid URL (postgresql://user:password@host:5432/dbname)") from None
        try:  # as asyncpg reads it: name=value pairs joined by &
            parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError("has a query string (after ?) that is not name=value pairs joined by &"
                             " (postgresql://user:password@host:5432/dbname?sslmode=require)") from None
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("names no host (postgresql://user:password@host:5432/dbname)")
        return SecretStr(url)

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            items = [item.strip() for item in value.split(",")]
            if not all(item.isdigit() for item in items):
                raise ValueError("must be shard numbers separated by commas, for example 0,1")
            return tuple(int(item) for item in items)
        if isinstance(value, int):
            return (value,)
        return value

    @field_validator("shard_ids")
    @classmethod
    def _shards_in_range(cls, value: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if value is None:
            return None
        if "shard_count" not in info.data:
            return value  # SHARD_COUNT itself is wrong, and named so
        count = info.data["shard_count"]
        if count is None:
            raise ValueError("needs SHARD_COUNT, the number of shards of all processes together")
        if not value:
            raise ValueError("names no shard: give this process's shards, for example 0,1")
        if len(set(value)) != len(value):
            raise ValueError("names a shard twice")
        wrong = [shard for shard in value if not 0 <= shard < count]
        if wrong:
            raise ValueError(f"shard {wrong[0]} is out of range: with SHARD_COUNT={count} shards are 0 to {count - 1}")
        return value

    @model_validator(mode="after")
    def _server_database_needs_a_key(self) -> Settings:
        if self.database_url is not None and self.token_encryption_key is None:
            raise ValueError(
                "TOKEN_ENCRYPTION_KEY is required with DATABASE_URL (PostgreSQL): no key file can live"
                " beside a server database; set the key every bot process shares (and that the SQLite"
                " database used, if you copy it)"
            )
        if self.lease_expiry_seconds < 2 * self.lease_heartbeat_seconds:
            raise ValueError("LEASE_EXPIRY_SECONDS must be at least twice LEASE_HEARTBEAT_SECONDS")
        return self

    @field_validator("token_encryption_key", "pixverse_application_id", "metrics_token", "http_container_port",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `TOKEN_ENCRYPTION_KEY=` in a .env file means "not set", as in the README.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("token_encryption_key")
    @classmethod
    def _a_fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Fernet's own rule (32 bytes, url-safe base64), read here so that a key pasted wrong is a
        # settings error at once, not a failure after logging in to Discord and opening the database.
        if value is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.get_secret_value().encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(NOT_A_FERNET_KEY)
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _listen_on_the_container_port(self) -> Settings:
        if self.http_container_port is not None and self.http_port != 0:
            self.http_port = self.http_container_port
        return self

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

    def shard_of(self, guild_id: int | str) -> int:
        """The shard of a server (Discord's rule), with SHARD_COUNT set."""
        assert self.shard_count is not None
        return shard_of(guild_id, self.shard_count)

    @property
    def key_file(self) -> Path:
        """Where a generated token key lives: beside the database."""
        return self.database_path.with_name(self.database_path.name + ".key")
