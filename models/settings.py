"""The one place configuration comes from: environment variables prefixed ``IMGBATCH_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that were obviously copied from an example rather than generated.
_PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "password", "example", ""})

Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGBATCH_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    # Unset means "start the embedded server" for `imgbatch run`; the API and workers need them.
    mongodb_url: str | None = None
    mongodb_database: str = "imgbatch"
    redis_url: str | None = None
    data_dir: Path = Path(".data")
    public_base_url: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    worker_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)

    # --- image processing --------------------------------------------------------------------
    jpeg_quality: int = Field(50, ge=1, le=95)
    max_image_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(50_000_000, gt=0)
    download_connect_timeout: Seconds = 5.0
    download_read_timeout: Seconds = 15.0
    download_deadline: Seconds = 60.0
    download_max_redirects: int = Field(5, ge=0, le=20)
    download_attempts: int = Field(3, ge=1, le=10)
    download_backoff_initial: Seconds = 0.5
    download_backoff_max: Seconds = 30.0
    product_image_concurrency: int = Field(8, ge=1, le=64)

    # --- input safety ------------------------------------------------------------------------
    allow_private_networks: bool = False
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    max_csv_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_csv_rows: int = Field(100_000, gt=0)
    max_urls_per_row: int = Field(20, gt=0)
    max_url_length: int = Field(2048, gt=0)

    # --- queueing ----------------------------------------------------------------------------
    # A product whose task has not finished after this long is handed out again by the reconciler.
    product_lease_seconds: Seconds = 600.0
    reconcile_interval_seconds: Seconds = 30.0
    dispatch_chunk_size: int = Field(500, gt=0)
    max_attempts: int = Field(3, ge=1)
    # Redis redelivers a message unacknowledged for this long; it must exceed the longest task.
    broker_visibility_timeout: int = Field(1800, gt=0)

    # --- webhooks ----------------------------------------------------------------------------
    webhook_secret: SecretStr | None = None
    webhook_timeout: Seconds = 10.0
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    webhook_poll_interval_seconds: Seconds = 5.0

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @model_validator(mode="after")
    def _reject_placeholder_secrets(self) -> Self:
        secret = self.webhook_secret
        if secret is not None and secret.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError(
                "IMGBATCH_WEBHOOK_SECRET is a placeholder; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return self

    def require_mongodb_url(self) -> str:
        if not self.mongodb_url:
            raise RuntimeError("IMGBATCH_MONGODB_URL is not set")
        return self.mongodb_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError("IMGBATCH_REDIS_URL is not set")
        return self.redis_url


@lru_cache
def get_settings() -> Settings:
    return Settings()


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The environment for a child process of ours: this one's, with ``IMGBATCH_`` overrides."""
    return {**os.environ, **overrides}
