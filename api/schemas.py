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


class StatusView(BaseModel):
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
    offset: int
    limit: int
    products: list[ProductView]
