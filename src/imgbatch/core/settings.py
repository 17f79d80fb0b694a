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
    """Every setting is an environment variable: ``IMGBATCH_`` and the field's name in capitals
    (or a line of a ``.env`` file). docs/settings.md is generated from the descriptions below
    (``make docs``); tests/core/test_settings_doc.py fails when the two drift apart."""

    model_config = SettingsConfigDict(env_prefix="IMGBATCH_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    mongodb_url: str | None = Field(
        None,
        description="MongoDB URL (a replica set in production, see scaling-out.md). Unset: "
        "`imgbatch run` starts an embedded server; the API and workers need it set.",
    )
    mongodb_database: str = Field("imgbatch", description="Database name.")
    mongodb_retry_writes: bool = Field(
        True,
        description="Adds `retryWrites=` to the MongoDB URL unless the URL names it itself. On "
        "for a production replica set: a write cut off by a failover is retried once (ours are "
        "idempotent, so never counted twice). The embedded server's URL says "
        "`retryWrites=false` itself, as it has no sessions to retry in.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (the Celery broker, live events, rate limits). Unset: "
        "`imgbatch run` starts an embedded server; the API and workers need it set.",
    )
    data_dir: Path = Field(
        Path(".data"),
        description="Output images with `STORAGE=local` (`media/`), the embedded servers' "
        "data, logs.",
    )
    public_base_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8000"), description="Base of every URL handed out."
    )
    host: str = Field("127.0.0.1", description="Where `imgbatch run` serves the API.")
    port: int = Field(8000, description="The port `imgbatch run` serves the API on.")
    log_level: str = Field("INFO", description="Lowest level logged: DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["json", "console"] = Field(
        "console",
        description="`json`: one JSON object per line, for log shippers; `console`: aligned "
        "key=value lines for people.",
    )
    worker_concurrency: int = Field(
        default_factory=lambda: 2 * (os.cpu_count() or 1),
        ge=1,
        # docs/settings.md shows this instead of the generating machine's count.
        json_schema_extra={"shown_default": "2 x CPU count"},
        description="Image worker processes a worker starts (`imgbatch run`, docker-compose). "
        "Default: twice the CPU count, as a process waiting on downloads leaves its core to "
        "another (bench/README.md).",
    )

    # --- media storage -----------------------------------------------------------------------
    storage: Literal["local", "s3"] = Field(
        "local",
        description="Where outputs live: `local` (files under DATA_DIR/media: one machine or a "
        "shared disk) or `s3` (any S3-compatible object store: workers on many machines). S3 "
        "credentials come from the standard AWS variables or credential chain, never from "
        "these settings.",
    )
    s3_endpoint_url: HttpUrl | None = Field(
        None,
        description="The S3 server. Unset with STORAGE=s3: AWS S3 itself, or, under "
        "`imgbatch run`, an embedded SeaweedFS.",
    )
    s3_bucket: str = Field(
        "imgbatch", min_length=3, max_length=63, description="The bucket outputs go to."
    )
    s3_region: str = Field("us-east-1", description="The region S3 requests are signed for.")
    media_base_url: HttpUrl | None = Field(
        None,
        description="Output URLs point here when set (a CDN, or the bucket's public URL) "
        "instead of `/media` on the API; make `o/` public there, never `tmp/`.",
    )
    media_redirect: Literal["stream", "presigned"] = Field(
        "stream",
        description="How `/media` answers: `stream` the bytes through the API, or (`presigned`, "
        "STORAGE=s3 only) redirect to a presigned URL of the object store, which must then be "
        "reachable by whoever follows the redirect.",
    )
    media_presign_seconds: int = Field(
        3600,
        gt=0,
        le=7 * 24 * 3600,
        description="How long a presigned URL is valid (the redirect itself may be cached for "
        "half of that).",
    )

    # --- image processing --------------------------------------------------------------------
    jpeg_quality: int = Field(50, ge=1, le=95, description="Output JPEG quality (1-95).")
    jpeg_optimize: bool = Field(
        False,
        description="Per-image Huffman tables: ~8 % smaller files, same pixels, for ~1.9x the "
        "codec CPU. Off because the codec is what bounds a batch's wall time (bench/README.md).",
    )
    max_image_bytes: int = Field(
        25 * 1024 * 1024,
        gt=0,
        description="Download byte cap; also the cap on `POST /api/images` (checked before the "
        "body is read).",
    )
    max_image_pixels: int = Field(
        50_000_000, gt=0, description="Pixel cap, checked before decoding."
    )
    max_jpeg_scans: int = Field(
        100,
        gt=0,
        description="A JPEG with more scans is refused before decoding, failing the image with "
        "`decode_timeout` (libjpeg writes 10).",
    )
    decode_cpu_seconds: Seconds = Field(
        5.0,
        description="CPU seconds one image's decode may use before it stops and fails the "
        "image with `decode_timeout`.",
    )
    download_connect_timeout: Seconds = Field(
        5.0, description="Seconds to connect to an image's server."
    )
    download_read_timeout: Seconds = Field(
        15.0, description="Seconds to wait for each read from an image's server."
    )
    download_deadline: Seconds = Field(60.0, description="Total seconds for one download attempt.")
    download_max_redirects: int = Field(
        5, ge=0, le=20, description="Redirects followed, each target checked again."
    )
    download_attempts: int = Field(
        3, ge=1, le=10, description="Attempts at a download on transient failures."
    )
    download_backoff_initial: Seconds = Field(
        0.5, description="Seconds before the first download retry; it grows up to the maximum."
    )
    download_backoff_max: Seconds = Field(
        30.0, description="Longest wait between two download attempts, in seconds."
    )
    product_image_concurrency: int = Field(
        8, ge=1, le=64, description="Concurrent downloads within one product."
    )
    download_budget_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Bytes of downloaded bodies one worker process holds at once while they "
        "wait to be compressed (8 products x 8 images of 25 MB would otherwise be 1.6 GB). A "
        "process holds at most the larger of this and MAX_IMAGE_BYTES.",
    )
    products_per_task: int = Field(
        8,
        ge=1,
        le=100,
        description="Products one task works on at once: a process decodes one image while "
        "the others download instead of waiting on each product's downloads in turn.",
    )
    profiles: dict[str, Any] = Field(
        default_factory=dict,
        description='Operator output profiles as JSON: `{"name": [{"name", "format", '
        '"quality"?, "max_edge"?}, ...]}` (profiles-and-outputs.md). Checked when the API '
        "starts; built-in names cannot be redefined.",
    )
    report_gps: bool = Field(
        False,
        description="Store and show EXIF GPS coordinates in image records. Off: they are "
        "personal data, and only `has_gps` is reported.",
    )
    temp_ttl_hours: float = Field(
        24.0,
        gt=0,
        description="Originals of single-image jobs are deleted this many hours after the job "
        "is final.",
    )

    # --- input safety ------------------------------------------------------------------------
    auth_disabled: bool = Field(
        False,
        description="**Local use only**: no API key is needed, and every caller is the owner "
        "`local`.",
    )
    allow_private_networks: bool = Field(
        False,
        description="Allow image URLs and webhooks that reach loopback or private addresses "
        "(tests and the demo only).",
    )
    allowed_ports: list[int] = Field(
        default_factory=lambda: [80, 443],
        description="Ports image URLs may use; `[]` allows any.",
    )
    max_csv_bytes: int = Field(50 * 1024 * 1024, gt=0, description="Upload size cap (413 over it).")
    max_csv_rows: int = Field(100_000, gt=0, description="Rows one sheet may have.")
    max_urls_per_row: int = Field(20, gt=0, description="Image URLs one row may list.")
    max_url_length: int = Field(2048, gt=0, description="Characters one image URL may have.")
    max_csv_columns: int = Field(
        100,
        gt=0,
        description="Named columns in a sheet's header (422 over it). With the next setting it "
        "bounds a row's cost whatever the header, as every row stores its extra cells.",
    )
    max_extra_bytes_per_row: int = Field(
        8192,
        gt=0,
        description="UTF-8 bytes of one row's non-empty extra cells, their column names "
        "included (a row error over it).",
    )

    key_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="Each API process remembers which owner a key hash belongs to (and that a "
        "hash is unknown) this long: a revoked key is refused at most this long after "
        "`imgbatch keys revoke`, at once where Redis carries the revocation notice. `0` reads "
        "MongoDB on every request.",
    )

    rate_limit_uploads: int = Field(60, gt=0, description="Uploads per API key per window.")
    rate_limit_window_seconds: int = Field(
        60, gt=0, description="The upload rate limit's window, in seconds."
    )
    max_requests_in_flight: int = Field(
        20,
        gt=0,
        description="Unfinished requests per API key at once (429 over it; a retry counts as "
        "one again).",
    )
    idempotency_lease_seconds: Seconds = Field(
        300.0,
        description="An `Idempotency-Key` reserved by an upload that never answered (its "
        "process died) is taken over by a retry after this long; longer than any upload takes "
        "to be processed.",
    )

    # --- queueing ----------------------------------------------------------------------------
    product_lease_seconds: Seconds = Field(
        15.0,
        description="A run holds each product it claims this long and renews the hold every "
        "third of it while it works (one write per run, not per image). A product is taken from "
        "it only when its hold ran out or its process is seen dead on its host "
        "(worker/leases.py), and that counts as an attempt. Short, so a run that died on another "
        "host costs seconds: renewals do not wait on downloads.",
    )
    request_idle_seconds: Seconds = Field(
        300.0,
        description="A request whose counters have not moved for this long is reconciled: "
        "recounted from its products, and its unfinished products are enqueued again. A last "
        "resort: dead runs and a broker that lost its messages are seen directly, on every "
        "reconcile.",
    )
    reconcile_interval_seconds: Seconds = Field(
        5.0,
        description="How often beat runs the reconciler, which looks for dead runs and a broker "
        "that lost its messages: with the lease, it bounds how long a killed process stalls "
        "anything.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Runs of a product (its first claim, then each reclaim of an expired "
        "lease) before it is failed with `worker_crash`.",
    )
    result_ttl_days: int = Field(
        30,
        ge=0,
        description="Requests, products and their hold on output images are deleted this many "
        "days after upload (an output is deleted once no request holds it); expired requests "
        "answer 410 Gone. `0` keeps them forever.",
    )
    retention_interval_seconds: Seconds = Field(
        3600.0, description="How often beat runs the retention sweeper."
    )
    staging_ttl_seconds: Seconds = Field(
        3600.0,
        description="Staged rows with no request after this long are the remains of an "
        "interrupted upload, and are swept.",
    )
    test_crash_marker: str | None = Field(
        None,
        description="**Tests only**: a worker that meets an image URL containing this marker "
        "kills its own process, like a poison message would. Never set it outside the fault "
        "tests.",
    )
    broker_visibility_timeout: int = Field(
        900,
        gt=0,
        description="Redis redelivers a message unacknowledged for this many seconds (its "
        "worker died); it must exceed the longest task.",
    )
    broker_restore_interval_seconds: int = Field(
        10,
        gt=0,
        description="How often a worker scans for messages whose consumer died, in seconds "
        "(kombu's default is ~100 s).",
    )

    # --- operating ---------------------------------------------------------------------------
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token for `GET /metrics`; unset, `/metrics` answers loopback "
        "clients only.",
    )
    flower_user: str = Field("admin", description="`imgbatch flower`'s basic-auth user.")
    flower_password: SecretStr | None = Field(
        None,
        description="`imgbatch flower`'s basic-auth password; unset, one is generated and "
        "printed once.",
    )
    flower_port: int = Field(
        5555, gt=0, lt=65536, description="The loopback port `imgbatch flower` listens on."
    )

    # --- webhooks ----------------------------------------------------------------------------
    # Every webhook is signed with a secret of its own (a subscriber's, or the one the upload
    # response hands out for its webhook_url), so there is no installation-wide webhook secret.
    webhook_timeout: Seconds = Field(
        10.0, description="A webhook attempt must get its 2xx within this many seconds."
    )
    webhook_retry_schedule: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        description="Seconds before each webhook attempt, the first one included; its length "
        "is the number of attempts.",
    )
    webhook_poll_interval_seconds: Seconds = Field(
        5.0, description="How often beat looks for deliveries whose next attempt is due."
    )
    webhook_secret_overlap_seconds: Seconds = Field(
        24 * 3600.0,
        description="How long a rotated-out subscriber secret keeps signing next to the new one.",
    )
    webhook_log_ttl_days: int = Field(
        30,
        ge=0,
        description="Webhook events and their delivery log are deleted this many days after "
        "the event; `0` keeps them forever.",
    )
    max_webhook_subscribers: int = Field(
        20,
        gt=0,
        description="Registered subscribers per API key (409 over it): every event fans out to "
        "all of them.",
    )
    webhook_owner_concurrency: int = Field(
        2,
        gt=0,
        description="Deliveries of one owner queued or in flight at once: a tenant whose "
        "receivers hang holds at most this many of the webhook worker's threads, and its "
        "backlog waits behind its own.",
    )
    webhook_worker_concurrency: int = Field(
        16,
        gt=0,
        description="Threads of the webhook worker: an attempt waits on the network, so a "
        "thread, not a process, is what a hanging receiver holds.",
    )

    # --- live events (GET /api/requests/{id}/events) -----------------------------------------
    events_keepalive_seconds: Seconds = Field(
        15.0,
        description="A comment line on every event stream this often keeps proxies from "
        "closing an idle stream.",
    )
    events_max_seconds: Seconds = Field(
        600.0,
        description="An event stream is closed after this long; clients reconnect with "
        "`Last-Event-ID` and lose nothing.",
    )
    events_poll_seconds: Seconds = Field(
        2.0,
        description="Pub/sub may drop messages: each API process also re-reads a watched "
        "request this often.",
    )
    status_cache_seconds: Seconds = Field(
        1.0,
        description="A `GET /api/status/{id}` answer is served from the API process's memory "
        "this long (at most 32 MB of answers per process, least recently used first out). A "
        "status change (cancel, retry, start, completion) drops it in every API process at "
        "once through Redis; this bounds how stale it can be when that notice is lost.",
    )

    # --- the `imgbatch` client commands (submit, status, watch, download) --------------------
    server_url: str | None = Field(
        None,
        description="Where the client commands send their HTTP calls; unset, "
        "`http://HOST:PORT`. `--server` overrides it.",
    )
    api_key: SecretStr | None = Field(
        None, description="The API key the client commands send; `--api-key` overrides it."
    )

    # --- worker metrics (docker-compose) -----------------------------------------------------
    worker_metrics_port: int | None = Field(
        None,
        gt=0,
        lt=65536,
        description="A worker's main process serves its own processes' metrics (Prometheus "
        "text at `/metrics`, every pool process summed) on this port, on all interfaces, once "
        "it is ready to take tasks. For workers that run apart from the API, as under "
        "docker-compose, where Prometheus scrapes each worker container; unset serves none "
        "(`imgbatch run`'s API already sums every process of its stack).",
    )

    # --- feat-api: SSE on S3, JWT bearer tokens -----------------------------------------------
    s3_sse: Literal["AES256", "aws:kms"] | None = Field(
        None,
        description="Server-side encryption asked for on every object the S3 store writes: "
        "AES256 (SSE-S3) or aws:kms (SSE-KMS). Unset: the bucket's default.",
    )
    s3_sse_kms_key_id: str | None = Field(
        None,
        description="The KMS key for IMGBATCH_S3_SSE=aws:kms (an id, alias or ARN). Unset: "
        "the account's default KMS key for S3.",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="Accept JWT bearer tokens signed HS256 with this shared secret.",
    )
    jwt_public_key: SecretStr | None = Field(
        None,
        description="Accept JWT bearer tokens signed with the private half of this PEM public "
        "key: RS256 for an RSA key, ES256 for a P-256 key. Exclusive with IMGBATCH_JWT_SECRET.",
    )
    jwt_audience: str | None = Field(
        None, description="Tokens must carry this `aud` (unset: tokens must carry no `aud`)."
    )
    jwt_issuer: str | None = Field(None, description="Tokens must carry this `iss` (if set).")

    # --- hostile input: bodies and event streams (issue 22) ---
    max_body_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="The largest body any route but the two uploads takes (JSON): a larger one "
        "is a 413 before it is read past this, and before it is parsed",
    )
    events_streams_per_owner: int = Field(
        20,
        ge=1,
        description="Event streams one owner (API key) may hold open at once on one API "
        "process; one more is a 429 with Retry-After",
    )
    events_streams_per_process: int = Field(
        2000,
        ge=1,
        description="Event streams one API process holds open at once, whoever owns them; one "
        "more is a 503 with Retry-After (another process behind the balancer may take it)",
    )
    events_resumes_per_minute: int = Field(
        60,
        ge=1,
        description="Streams opened with a Last-Event-ID per owner and minute on one API "
        "process (each replays finished products); more is a 429 with Retry-After",
    )
    events_replay_limit: int = Field(
        500,
        ge=0,
        le=10_000,
        description="The most finished products one resume replays; a client away longer "
        "reloads the product pages from GET /api/status",
    )

    # --- writes: MongoDB writes per flush, not per image (issue 23) ---
    test_crash_at_count_marker: str | None = Field(
        None,
        description="**Tests only**: a worker whose flush holds a product with an image URL "
        "containing this marker kills its own process after the products' final moves and "
        "before their count. Never set it outside the fault tests.",
    )

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

    @field_validator("s3_sse", "s3_sse_kms_key_id", "jwt_audience", "jwt_issuer", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_way_to_verify_tokens(self) -> Self:
        # Two keys would mean two algorithms accepted for one token: the pin is the point.
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ValueError("set IMGBATCH_JWT_SECRET or IMGBATCH_JWT_PUBLIC_KEY, not both")
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("IMGBATCH_S3_SSE_KMS_KEY_ID needs IMGBATCH_S3_SSE=aws:kms")
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
