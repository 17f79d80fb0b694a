"""Reading requests back: ``GET /api/requests`` (the key's list), ``GET /api/status/{id}``,
``GET /api/download/{id}`` (the result CSV, or only its failed rows) and
``GET /api/requests/{id}/results`` (every image record, as JSON Lines)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import (
    DeliveriesDep,
    OwnedRequestDep,
    ProductsDep,
    RequestsDep,
    SettingsDep,
    StateDep,
    get_owned_request,
)
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.api.paging import Offset
from imgbatch.api.schemas import (
    ImageErrorView,
    ProductView,
    RequestListView,
    RequestSummaryView,
    StatusView,
    request_webhook_view,
)
from imgbatch.core.errors import Conflict, UnprocessableEntity
from imgbatch.core.settings import Settings
from imgbatch.domain.images import image_json, image_views, variant_urls
from imgbatch.domain.metadata import metadata_object
from imgbatch.domain.urls import output_urls
from imgbatch.imaging.profiles import Profile, default_profile
from imgbatch.models.products import ProductRecord, ProductRepository
from imgbatch.models.requests import RequestRecord, RequestRepository, RequestStatus
from imgbatch.models.webhooks import WebhookDeliveryRepository
from imgbatch.sheets import NAME_COLUMN, SERIAL_COLUMN, URLS_COLUMN, neutralize_cell

router = APIRouter(tags=["requests"])

OUTPUT_COLUMN = "Output Image Urls"
# Rows per chunk of a streamed download (see _chunked).
STREAM_CHUNK_ROWS = 256
ERRORS_COLUMN = "Errors"
# Coordinates are left out of every exif object unless IMGBATCH_REPORT_GPS is on.
_NO_GPS = {"products": {"__all__": {"images": {"__all__": {"exif": {"latitude", "longitude"}}}}}}


def request_profile(settings: Settings, record: RequestRecord) -> Profile:
    """The profile snapshot the request was made with (requests from before: the default)."""
    return record.profile or default_profile(settings.jpeg_quality)


def _output_urls(settings: Settings, product: ProductRecord) -> list[str | None]:
    if not product.status.is_final:
        return [None] * len(product.input_image_urls)
    return output_urls(settings, product.output_keys)


@router.get(
    "/api/status/{request_id}",
    response_model=StatusView,
    responses=errors(*OWNED_REQUEST, UnprocessableEntity),
)
async def request_status(
    request_id: str,
    owner: OwnerDep,
    settings: SettingsDep,
    requests: RequestsDep,
    products: ProductsDep,
    deliveries: DeliveriesDep,
    state: StateDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    # Pollers ask many times a second; counters only move forward, so a second-old answer is
    # as good as a fresh one and saves a database read per poll. The rendered JSON is what is
    # cached: serialising a 100-product page on every poll was most of the API's CPU. A status
    # change (cancel, retry, completion) drops it in every API process at once (AppState.forget).
    body = await state.status_cache.get_or_load(
        (request_id, owner, offset, limit),
        lambda: _status_json(
            request_id, owner, settings, requests, products, deliveries, offset, limit
        ),
    )
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": f"private, max-age={int(settings.status_cache_seconds)}"},
    )


async def _status_json(
    request_id: str,
    owner: str,
    settings: Settings,
    requests: RequestRepository,
    products: ProductRepository,
    deliveries: WebhookDeliveryRepository,
    offset: int,
    limit: int,
) -> bytes:
    record = await get_owned_request(requests, request_id, owner)
    page = await products.page(request_id, offset=offset, limit=limit)
    delivery = await deliveries.for_request_target(record.id) if record.webhook_url else None
    view = StatusView(
        **_summary(record).model_dump(),
        webhook=request_webhook_view(record, delivery),
        offset=offset,
        limit=limit,
        products=[
            ProductView(
                serial_number=p.serial_number,
                product_name=p.product_name,
                status=p.status,
                input_image_urls=p.input_image_urls,
                output_image_urls=_output_urls(settings, p),
                errors=[
                    ImageErrorView(url=e.url, code=e.code, message=e.message) for e in p.errors
                ],
                images=image_views(settings, p),
            )
            for p in page
        ],
    )
    return view.model_dump_json(exclude=None if settings.report_gps else _NO_GPS).encode()


def _summary(record: RequestRecord) -> RequestSummaryView:
    return RequestSummaryView(
        request_id=record.id,
        status=record.status,
        progress=record.progress,
        products_total=record.products_total,
        products_done=record.products_done,
        images_total=record.images_total,
        images_done=record.images_done,
        images_failed=record.images_failed,
        created_at=record.created_at,
        updated_at=record.updated_at,
        completed_at=record.completed_at,
        failure_reason=record.failure_reason,
        file_name=record.file_name,
        metadata=metadata_object(record.metadata_json),
    )


@router.get("/api/requests", response_model=RequestListView, responses=errors(Unauthorized))
async def list_requests(
    owner: OwnerDep,
    requests: RequestsDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: RequestStatus | None = None,
) -> RequestListView:
    """The caller's requests, newest first, with their counters."""
    # One more than asked tells whether there is a next page without counting them all.
    records = await requests.list_for_owner(owner, status=status, offset=offset, limit=limit + 1)
    return RequestListView(
        requests=[_summary(record) for record in records[:limit]],
        offset=offset,
        limit=limit,
        has_more=len(records) > limit,
    )


@router.get(
    "/api/download/{request_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, **errors(*OWNED_REQUEST, Conflict)},
)
async def download_results(
    record: OwnedRequestDep,
    settings: SettingsDep,
    products: ProductsDep,
    only: Annotated[
        Literal["failed"] | None,
        Query(description="`failed`: only rows with a failed image, in the input's columns"),
    ] = None,
) -> StreamingResponse:
    request_id = record.id
    if record.status != RequestStatus.COMPLETED:
        raise Conflict(
            {"message": f"request {request_id} is not completed yet", "status": record.status}
        )
    rows = _failed_rows(record, products) if only else _result_rows(settings, record, products)
    name = f"imgbatch-{request_id}{'-failed' if only else ''}.csv"
    return StreamingResponse(
        _chunked(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _chunked(lines: AsyncIterator[str], rows: int = STREAM_CHUNK_ROWS) -> AsyncIterator[str]:
    """``rows`` lines per chunk: every chunk a StreamingResponse sends passes through each
    middleware's ``send`` and is one socket write, and sent per line that was a third of the
    download's CPU. A few hundred rows keep memory flat all the same."""
    chunk: list[str] = []
    async for line in lines:
        chunk.append(line)
        if len(chunk) >= rows:
            yield "".join(chunk)
            chunk.clear()
    if chunk:
        yield "".join(chunk)


def _csv_line() -> Callable[[list[str]], str]:
    """A function that renders one CSV line, reusing one buffer."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: list[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([neutralize_cell(cell) for cell in cells])
        return buffer.getvalue()

    return line


async def _result_rows(
    settings: Settings, record: RequestRecord, products: ProductRepository
) -> AsyncIterator[str]:
    """One CSV line at a time, so memory stays flat however many products there are."""
    line = _csv_line()
    # One column per non-primary variant, after the primary's: a default request's CSV keeps
    # exactly the shape it always had.
    variants = request_profile(settings, record).secondary
    secondary = [variant.name for variant in variants]
    yield line(
        [
            *(name for name, _ in record.columns),
            OUTPUT_COLUMN,
            *(variant.column for variant in variants),
            ERRORS_COLUMN,
        ]
    )
    async for product in products.iterate(record.id):
        yield line([*_input_cells(record, product), *_outcome_cells(settings, product, secondary)])


async def _failed_rows(record: RequestRecord, products: ProductRepository) -> AsyncIterator[str]:
    """The input rows with at least one failed image, as uploaded: fix them, upload again."""
    line = _csv_line()
    yield line([name for name, _ in record.columns])
    async for product in products.iterate(record.id):
        if product.errors:
            yield line(_input_cells(record, product))


def _input_cells(record: RequestRecord, product: ProductRecord) -> list[str]:
    required = {
        SERIAL_COLUMN: str(product.serial_number),
        NAME_COLUMN: product.product_name,
        URLS_COLUMN: ",".join(product.input_image_urls),
    }
    return [
        required[role] if role else product.extra.get(name, "") for name, role in record.columns
    ]


def _outcome_cells(settings: Settings, product: ProductRecord, secondary: list[str]) -> list[str]:
    outputs = ",".join(url or "" for url in _output_urls(settings, product))
    variants = [
        ",".join(url or "" for url in variant_urls(settings, product, name)) for name in secondary
    ]
    errors = "; ".join(f"{e.url} -> {e.code}: {e.message}" for e in product.errors)
    return [outputs, *variants, errors]


@router.get(
    "/api/requests/{request_id}/results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}, **errors(*OWNED_REQUEST)},
)
async def request_results(
    record: OwnedRequestDep, settings: SettingsDep, products: ProductsDep
) -> StreamingResponse:
    """Every image record of the request, one JSON object per line, in input order.

    Streamed from a cursor, so memory stays flat however large the request; records of images
    not done yet say ``pending``.
    """
    return StreamingResponse(
        _chunked(_result_lines(settings, record, products)),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'inline; filename="imgbatch-{record.id}.jsonl"'},
    )


async def _result_lines(
    settings: Settings, record: RequestRecord, products: ProductRepository
) -> AsyncIterator[str]:
    metadata = metadata_object(record.metadata_json)
    async for product in products.iterate(record.id):
        for view in image_views(settings, product):
            data = image_json(
                view,
                settings,
                serial_number=product.serial_number,
                product_name=product.product_name,
            )
            if metadata is not None:  # no null on every line of a large request without any
                data["metadata"] = metadata
            yield json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"
