"""The per-image record users see, built one way for status, the results stream, single-image
jobs and webhooks: what each input image became, with absolute URLs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from imgbatch.core.settings import Settings
from imgbatch.domain.services import Services
from imgbatch.domain.urls import media_url
from imgbatch.models.products import ImageError, ProductRecord
from imgbatch.models.requests import RequestKind, RequestRecord

ImageStatus = Literal["pending", "done", "failed"]
_GPS_FIELDS = ("latitude", "longitude")


class VariantView(BaseModel):
    url: str
    format: str
    width: int
    height: int
    bytes: int


class SourceView(BaseModel):
    format: str
    width: int
    height: int
    bytes: int
    sha256: str


class ExifView(BaseModel):
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    taken_at: str | None = None
    orientation: int | None = None
    software: str | None = None
    has_gps: bool = False
    # Only with IMGBATCH_REPORT_GPS=true; left out of the JSON otherwise.
    latitude: float | None = None
    longitude: float | None = None


class ImageErrorDetail(BaseModel):
    code: str
    message: str


class ImageWarningDetail(ImageErrorDetail):
    """A catalogue-quality warning: ``too_small``, ``extreme_aspect``, ``blurry`` or
    ``not_white_background`` (imaging.quality); the image is done all the same."""


class ImageView(BaseModel):
    index: int
    url: str
    status: ImageStatus
    output_url: str | None = None
    variants: dict[str, VariantView] = {}
    source: SourceView | None = None
    exif: ExifView | None = None
    dominant_color: str | None = None
    placeholder: str | None = None
    reused: str | None = None
    error: ImageErrorDetail | None = None
    warnings: list[ImageWarningDetail] = []
    # What produced the outputs, and how long this image took in its request.
    operations: list[str] = []
    processing_ms: int | None = None


def image_views(settings: Settings, product: ProductRecord) -> list[ImageView]:
    errors = {error.index: error for error in product.errors}
    return [
        _view(settings, product, index, url, errors.get(index))
        for index, url in enumerate(product.input_image_urls)
    ]


def _view(
    settings: Settings, product: ProductRecord, index: int, url: str, error: ImageError | None
) -> ImageView:
    if error is not None:
        return ImageView(
            index=index,
            url=url,
            status="failed",
            error=ImageErrorDetail(code=error.code, message=error.message),
        )
    outcome = product.image(index)
    key = product.output_key(index)
    if outcome is None:
        if key is None or not product.status.is_final:
            return ImageView(index=index, url=url, status="pending")
        # Stored before per-image records existed: all that is known is the output.
        return ImageView(index=index, url=url, status="done", output_url=media_url(settings, key))
    rendered = outcome.rendered
    variants = {
        name: VariantView(
            url=media_url(settings, stored.key),
            format=stored.format,
            width=stored.width,
            height=stored.height,
            bytes=stored.bytes,
        )
        for name, stored in rendered.variants.items()
    }
    return ImageView(
        index=index,
        url=url,
        status="done",
        output_url=next(iter(variants.values())).url,
        variants=variants,
        source=SourceView.model_validate(rendered.source.model_dump()),
        exif=_exif(settings, rendered.exif),
        dominant_color=rendered.dominant_color,
        placeholder=rendered.placeholder,
        reused=outcome.reused,
        operations=rendered.operations,
        processing_ms=outcome.processing_ms,
        warnings=[ImageWarningDetail(code=w.code, message=w.message) for w in outcome.warnings],
    )


def _exif(settings: Settings, exif: dict[str, Any] | None) -> ExifView | None:
    if exif is None:
        return None
    if not settings.report_gps:
        exif = {k: v for k, v in exif.items() if k not in _GPS_FIELDS}
    return ExifView.model_validate(exif)


def image_json(view: ImageView, settings: Settings, **extra: Any) -> dict[str, Any]:
    """The record as JSON: coordinates appear only when reported, as the field list promises."""
    data = view.model_dump(mode="json")
    if data.get("exif") is not None and not settings.report_gps:
        for field in _GPS_FIELDS:
            data["exif"].pop(field, None)
    return {**extra, **data}


def variant_urls(settings: Settings, product: ProductRecord, variant: str) -> list[str | None]:
    """One variant's URL per input image (None where it failed or is not done): a CSV column."""
    urls: list[str | None] = []
    for index in range(len(product.input_image_urls)):
        outcome = product.image(index) if product.status.is_final else None
        stored = outcome.rendered.variants.get(variant) if outcome else None
        urls.append(media_url(settings, stored.key) if stored else None)
    return urls


def single_image_json(
    settings: Settings, request: RequestRecord, product: ProductRecord
) -> dict[str, Any]:
    """A single-image job's one record, with the request it belongs to."""
    return image_json(
        image_views(settings, product)[0],
        settings,
        request_id=request.id,
        request_status=request.status.value,
    )


async def single_image_data(svc: Services, request: RequestRecord) -> dict[str, Any] | None:
    """The record a single-image job's webhook carries inline; None for a sheet's request."""
    if request.kind != RequestKind.IMAGE:
        return None
    product = await svc.products.get(request.id, 1)
    return single_image_json(svc.settings, request, product) if product else None
