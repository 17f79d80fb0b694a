"""Response bodies of the public API. Field names are a contract: add, never rename.

A status page's products (``ProductView``) are defined in domain.status: the completion task
renders them once for the stored pages.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from imgbatch.domain.images import ImageView
from imgbatch.domain.metadata import Metadata
from imgbatch.domain.status import ProductView
from imgbatch.models.requests import RequestRecord
from imgbatch.models.webhooks import DeliveryRecord


class UploadAccepted(BaseModel):
    request_id: str
    status: str
    status_url: str
    download_url: str
    products: int
    images: int
    # Signs the deliveries to webhook_url (Standard Webhooks); returned here only, never again.
    webhook_secret: str | None = None


class WebhookAttemptView(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class RequestWebhookView(BaseModel):
    """The delivery to a request's own ``webhook_url``.

    ``state`` is ``waiting`` until the request finishes, then ``pending``, ``delivered`` or
    ``failed``.
    """

    url: str
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivery_id: str | None
    log: list[WebhookAttemptView]


class RequestSummaryView(BaseModel):
    """A request and its counters: an entry of ``GET /api/requests``, and the head of status."""

    request_id: str
    status: str
    progress: int
    products_total: int
    products_done: int
    images_total: int
    images_done: int
    images_failed: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    failure_reason: str | None = None
    file_name: str | None = None
    # The caller's own metadata from the upload (domain.metadata), or None.
    metadata: Metadata | None = None


class RequestListView(BaseModel):
    requests: list[RequestSummaryView]
    offset: int
    limit: int
    has_more: bool


class StatusView(RequestSummaryView):
    webhook: RequestWebhookView | None = None
    offset: int
    limit: int
    products: list[ProductView]


class VariantSpecView(BaseModel):
    name: str
    format: str
    quality: int
    max_edge: int | None


class ChecksView(BaseModel):
    """The catalogue-quality thresholds (null: that check is off)."""

    min_long_edge: int | None
    min_sharpness: float | None
    max_aspect: float | None
    min_white_border: float | None


class ProfileView(BaseModel):
    name: str
    builtin: bool
    # The first is the primary: its URL is the one in output_image_urls.
    variants: list[VariantSpecView]
    checks: ChecksView


class ProfilesView(BaseModel):
    default: str
    profiles: list[ProfileView]


class SingleImageView(ImageView):
    """``GET /api/images/{id}``: a single-image job's one record, with its request."""

    request_id: str
    request_status: str


def attempt_views(delivery: DeliveryRecord) -> list[WebhookAttemptView]:
    return [WebhookAttemptView.model_validate(a.model_dump()) for a in delivery.log]


def request_webhook_view(
    request: RequestRecord, delivery: DeliveryRecord | None
) -> RequestWebhookView | None:
    """The ``webhook`` field of a request's status; None when it has no ``webhook_url``."""
    if not request.webhook_url:
        return None
    if delivery is None:
        return RequestWebhookView(
            url=request.webhook_url,
            state="waiting",
            attempts=0,
            last_status_code=None,
            last_error=None,
            next_attempt_at=None,
            delivery_id=None,
            log=[],
        )
    return RequestWebhookView(
        url=delivery.url,
        state=delivery.state,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        delivery_id=delivery.id,
        log=attempt_views(delivery),
    )
