"""The one place configuration comes from: environment variables prefixed ``IMGBATCH_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator
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
    # Added to the MongoDB URL unless it names retryWrites itself. On for a production replica
    # set (a write interrupted by a failover is retried once); the embedded server's URL turns
    # it off, as SecantusDB has no sessions to retry in.
    mongodb_retry_writes: bool = True
    redis_url: str | None = None
    data_dir: Path = Path(".data")
    public_base_url: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # One JSON object per line for log shippers, or aligned key=value lines for people.
    log_format: Literal["json", "console"] = "console"
    # Twice the cores: a process waiting on downloads leaves its core to another (bench/).
    worker_concurrency: int = Field(default_factory=lambda: 2 * (os.cpu_count() or 1), ge=1)

    # --- media storage -----------------------------------------------------------------------
    # Where outputs live: ``local`` (files under DATA_DIR/media, one machine or a shared disk) or
    # ``s3`` (any S3-compatible object store; workers on many machines). Credentials for S3
    # come from the standard AWS variables or credential chain, never from these settings.
    storage: Literal["local", "s3"] = "local"
    # Unset with storage=s3: AWS itself, or, under `imgbatch run`, an embedded SeaweedFS.
    s3_endpoint_url: HttpUrl | None = None
    s3_bucket: str = Field("imgbatch", min_length=3, max_length=63)
    s3_region: str = "us-east-1"
    # Output URLs point here when set (a CDN, or the bucket's public URL) instead of /media.
    media_base_url: HttpUrl | None = None
    # How /media answers: stream the bytes through the API, or redirect to a presigned URL
    # of the object store (the store must then be reachable by whoever follows the redirect).
    media_redirect: Literal["stream", "presigned"] = "stream"
    media_presign_seconds: int = Field(3600, gt=0, le=7 * 24 * 3600)

    # --- image processing --------------------------------------------------------------------
    jpeg_quality: int = Field(50, ge=1, le=95)
    # Per-image Huffman tables: ~8 % smaller files for ~1.9x the codec CPU. Off by default
    # because the codec is what bounds a batch's wall time (bench/README.md).
    jpeg_optimize: bool = False
    max_image_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(50_000_000, gt=0)
    # Decoding work (imaging/limits.py): a JPEG with more scans is refused before decoding,
    # and a decode that uses more CPU seconds stops; both fail the image with decode_timeout.
    max_jpeg_scans: int = Field(100, gt=0)
    decode_cpu_seconds: Seconds = 5.0
    download_connect_timeout: Seconds = 5.0
    download_read_timeout: Seconds = 15.0
    download_deadline: Seconds = 60.0
    download_max_redirects: int = Field(5, ge=0, le=20)
    download_attempts: int = Field(3, ge=1, le=10)
    download_backoff_initial: Seconds = 0.5
    download_backoff_max: Seconds = 30.0
    product_image_concurrency: int = Field(8, ge=1, le=64)
    # Bytes of downloaded bodies one worker process holds at once while they wait to be
    # compressed (worker/budget.py): 8 products x 8 images of 25 MB would otherwise be 1.6 GB.
    download_budget_bytes: int = Field(256 * 1024 * 1024, gt=0)
    # Products per task: a process works on all of them at once, so it decodes one image while
    # the others download instead of waiting on each product's downloads in turn (bench/).
    products_per_task: int = Field(8, ge=1, le=100)
    # Operator profiles as JSON: {"name": [{"name", "format", "quality"?, "max_edge"?}, ...]}.
    # Validated by imaging.profiles when the API starts; built-in names cannot be redefined.
    profiles: dict[str, Any] = Field(default_factory=dict)
    # EXIF GPS coordinates are personal data: only has_gps is reported unless this is on.
    report_gps: bool = False
    # Originals of single-image jobs stay in temporary storage this long after the job is final.
    temp_ttl_hours: float = Field(24.0, gt=0)

    # --- input safety ------------------------------------------------------------------------
    # Local use only: every caller is the owner "local" and no API key is needed.
    auth_disabled: bool = False
    allow_private_networks: bool = False
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    max_csv_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_csv_rows: int = Field(100_000, gt=0)
    max_urls_per_row: int = Field(20, gt=0)
    max_url_length: int = Field(2048, gt=0)
    # Named columns in a sheet's header, and UTF-8 bytes of one row's extra cells (column names
    # included): every row stores its extras, so these bound a row's cost whatever the header.
    max_csv_columns: int = Field(100, gt=0)
    max_extra_bytes_per_row: int = Field(8192, gt=0)

    # Each API process remembers which owner a key hash belongs to (and that a hash is unknown)
    # for this long: a revoked key is refused at most this long after `imgbatch keys revoke`,
    # at once where Redis carries the revocation notice. 0 reads MongoDB on every request.
    key_cache_seconds: float = Field(1.0, ge=0)

    # Per API key: uploads per window, and unfinished requests at once.
    rate_limit_uploads: int = Field(60, gt=0)
    rate_limit_window_seconds: int = Field(60, gt=0)
    max_requests_in_flight: int = Field(20, gt=0)
    # An Idempotency-Key reserved by an upload that never answered (its process died) is taken
    # over by a retry after this long; longer than any upload takes to be processed.
    idempotency_lease_seconds: Seconds = 300.0

    # --- queueing ----------------------------------------------------------------------------
    # A run holds each product it claims for this long and renews the hold every third of it
    # while it works (one write per run, not per image); a product is taken from it only when
    # its hold ran out or its process is seen dead on its host (worker/leases.py). Short, so a
    # run that died on another host costs seconds: renewals do not wait on downloads.
    product_lease_seconds: Seconds = 15.0
    # A request whose counters have not moved for this long is reconciled: recounted from its
    # products, and its unfinished products are enqueued again. A last resort: dead runs and a
    # broker that lost its messages are seen directly, on every reconcile.
    request_idle_seconds: Seconds = 300.0
    # How often the reconciler looks for dead runs and a broker that lost its messages: with
    # the lease, it bounds how long a killed process stalls anything (30 s, tests/faults/).
    reconcile_interval_seconds: Seconds = 5.0
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

    # --- operating ---------------------------------------------------------------------------
    # Bearer token for GET /metrics; without one, /metrics answers only loopback clients.
    metrics_token: SecretStr | None = None
    # `imgbatch flower`: basic-auth credentials (a password is generated and printed once when
    # none is set) and the loopback port it listens on.
    flower_user: str = "admin"
    flower_password: SecretStr | None = None
    flower_port: int = Field(5555, gt=0, lt=65536)

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

    # --- live events (GET /api/requests/{id}/events) -----------------------------------------
    # A comment line this often keeps proxies from closing an idle stream.
    events_keepalive_seconds: Seconds = 15.0
    # A stream is closed after this long; clients reconnect with Last-Event-ID and lose nothing.
    events_max_seconds: Seconds = 600.0
    # Pub/sub may drop messages: each API process also re-reads a watched request this often.
    events_poll_seconds: Seconds = 2.0
    # A status answer (GET /api/status/{id}) is served from the API process's memory for this
    # long. A status change (cancel, retry, start, completion) drops it in every API process at
    # once through Redis; this bounds how stale it can be when that notice is lost.
    status_cache_seconds: Seconds = 1.0

    # --- the `imgbatch` client commands (submit, status, watch, download) --------------------
    # Where the client commands send their HTTP calls, and the key they send. Optional: only
    # the client reads them, and --server/--api-key override them.
    server_url: str | None = None
    api_key: SecretStr | None = None

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

    @field_validator("s3_endpoint_url", "media_base_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        # `IMGBATCH_MEDIA_BASE_URL=` in an env file or compose means "not set", not "invalid".
        return None if value == "" else value

    @model_validator(mode="after")
    def _presigned_needs_object_storage(self) -> Self:
        if self.media_redirect == "presigned" and self.storage != "s3":
            raise ValueError("IMGBATCH_MEDIA_REDIRECT=presigned needs IMGBATCH_STORAGE=s3")
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


def child_environment(overrides: dict[str, str], *, without: str | None = None) -> dict[str, str]:
    """The environment for a child process of ours: this one's, with ``IMGBATCH_`` overrides,
    less the variables whose names start with ``without``."""
    inherited = {k: v for k, v in os.environ.items() if not (without and k.startswith(without))}
    return {**inherited, **overrides}


# prometheus_client reads this variable itself, once, when it is first imported: every value is
# then an mmap file in that directory, summed at scrape time across processes. The stack sets it
# for the processes it starts (cli/stack.py); core/metrics.py checks it was set early enough.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_multiprocess_dir() -> Path | None:
    value = os.environ.get(METRICS_DIR_ENV)
    return Path(value) if value else None
