"""The one place configuration comes from: environment variables prefixed ``IMGBATCH_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import Field, HttpUrl, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Seconds = Annotated[float, Field(gt=0)]


# Passwords that were obviously copied from an example rather than chosen.
_PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "password", "example"})


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
    # Twice the cores: a process waiting on downloads leaves its core to another (bench/).
    worker_concurrency: int = Field(default_factory=lambda: 2 * (os.cpu_count() or 1), ge=1)

    # --- image processing --------------------------------------------------------------------
    jpeg_quality: int = Field(50, ge=1, le=95)
    # Per-image Huffman tables: ~8 % smaller files for ~1.9x the codec CPU. Off by default
    # because the codec is what bounds a batch's wall time (bench/README.md).
    jpeg_optimize: bool = False
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
    # Products per task: a process works on all of them at once, so it decodes one image while
    # the others download instead of waiting on each product's downloads in turn (bench/).
    products_per_task: int = Field(8, ge=1, le=100)

    # --- input safety ------------------------------------------------------------------------
    # Local use only: every caller is the owner "local" and no API key is needed.
    auth_disabled: bool = False
    allow_private_networks: bool = False
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    max_csv_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_csv_rows: int = Field(100_000, gt=0)
    max_urls_per_row: int = Field(20, gt=0)
    max_url_length: int = Field(2048, gt=0)

    # Per API key: uploads per window, and unfinished requests at once.
    rate_limit_uploads: int = Field(60, gt=0)
    rate_limit_window_seconds: int = Field(60, gt=0)
    max_requests_in_flight: int = Field(20, gt=0)
    # An Idempotency-Key reserved by an upload that never answered (its process died) is taken
    # over by a retry after this long; longer than any upload takes to be processed.
    idempotency_lease_seconds: Seconds = 300.0

    # --- queueing ----------------------------------------------------------------------------
    # A run holds each product it claims for this long and renews the hold every third of it
    # while it works; only a product whose hold ran out (its run died) is taken from it.
    product_lease_seconds: Seconds = 120.0
    # A request whose counters have not moved for this long is reconciled: recounted from its
    # products, and its unfinished products are enqueued again.
    request_idle_seconds: Seconds = 300.0
    reconcile_interval_seconds: Seconds = 30.0
    max_attempts: int = Field(3, ge=1)
    # Results (request, products, output images) are deleted this many days after upload;
    # 0 keeps them forever. Expired requests answer 410 Gone.
    result_ttl_days: int = Field(30, ge=0)
    retention_interval_seconds: Seconds = 3600.0
    # Staged rows with no request after this long are the remains of an interrupted upload.
    staging_ttl_seconds: Seconds = 3600.0
    # Test-only: a worker that meets an image URL containing this marker kills its own process,
    # like a poison message would. Never set it outside the fault tests.
    test_crash_marker: str | None = None
    # Redis redelivers a message unacknowledged for this long; it must exceed the longest task.
    broker_visibility_timeout: int = Field(900, gt=0)
    # How often a worker scans for messages whose consumer died (kombu's default is ~100 s).
    broker_restore_interval_seconds: int = Field(10, gt=0)

    # --- webhooks ----------------------------------------------------------------------------
    # Every webhook is signed with a secret of its own (a subscriber's, or the one the upload
    # response hands out for its webhook_url), so there is no installation-wide webhook secret.
    webhook_timeout: Seconds = 10.0
    # Delay before each attempt, the first one included; its length is the number of attempts.
    webhook_retry_schedule: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
    )
    # How often beat looks for deliveries whose next attempt is due.
    webhook_poll_interval_seconds: Seconds = 5.0
    # How long a rotated-out subscriber secret keeps signing next to the new one.
    webhook_secret_overlap_seconds: Seconds = 24 * 3600.0
    # Webhook events and their delivery log are deleted this many days after the event; 0 keeps
    # them forever.
    webhook_log_ttl_days: int = Field(30, ge=0)
    # Registered subscribers per API key: every event fans out to all of them.
    max_webhook_subscribers: int = Field(20, gt=0)
    # Deliveries of one owner queued or in flight at once: a tenant whose receivers hang holds
    # at most this many of the webhook worker's threads, and its backlog waits behind its own.
    webhook_owner_concurrency: int = Field(2, gt=0)
    # Threads of the webhook worker `imgbatch run` starts: an attempt waits on the network, so
    # a thread, not a process, is what a hanging receiver holds.
    webhook_worker_concurrency: int = Field(16, gt=0)

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @model_validator(mode="after")
    def _reject_placeholder_passwords(self) -> Self:
        # A password copied from an example file is as good as none; refuse to start with one.
        for name, url in (("MONGODB_URL", self.mongodb_url), ("REDIS_URL", self.redis_url)):
            password = urlsplit(url).password if url else None
            if password is not None and password.strip().lower() in _PLACEHOLDER_SECRETS:
                raise ValueError(f"IMGBATCH_{name} has a placeholder password; set a real one")
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
