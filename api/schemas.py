"""Response bodies of the public API. Field names are a contract: add, never rename."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class UploadAccepted(BaseModel):
    request_id: str
    status: str
    status_url: str
    download_url: str
    products: int
    images: int
    # Signs the deliveries to webhook_url (Standard Webhooks); returned here only, never again.
    webhook_secret: str | None = None


class ImageErrorView(BaseModel):
    url: str
    code: str
    message: str


class ProductView(BaseModel):
    serial_number: int
    product_name: str
    status: str
    input_image_urls: list[str]
    output_image_urls: list[str | None]
    errors: list[ImageErrorView]


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
