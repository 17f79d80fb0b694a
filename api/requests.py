"""Reading a request back: ``GET /api/status/{id}`` and ``GET /api/download/{id}`` (the CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from api.auth import OwnerDep
from api.cache import STATUS_CACHE_SECONDS
from api.deps import DeliveriesDep, ProductsDep, RequestsDep, SettingsDep, StateDep
from api.schemas import ImageErrorView, ProductView, StatusView
from api.webhooks import request_webhook_view
from core.errors import Conflict, Gone, NotFound
from core.settings import Settings
from domain.urls import media_url
from models.products import ProductRecord, ProductRepository
from models.requests import RequestRecord, RequestRepository, RequestStatus, now
from models.webhooks import WebhookDeliveryRepository
from sheets import NAME_COLUMN, SERIAL_COLUMN, URLS_COLUMN, neutralize_cell

router = APIRouter(tags=["requests"])

OUTPUT_COLUMN = "Output Image Urls"
ERRORS_COLUMN = "Errors"


async def get_owned_request(
    requests: RequestRepository, request_id: str, owner: str
) -> RequestRecord:
    """The caller's request: 404 if it is someone else's or unknown, 410 once it has expired."""
    record = await requests.get(request_id, owner=owner)
    if record is None:
        raise NotFound(f"request {request_id} not found")
    if record.is_expired(now()):
        raise Gone(f"request {request_id} has expired and its results were deleted")
    return record


def _output_urls(settings: Settings, product: ProductRecord) -> list[str | None]:
    if not product.status.is_final:
        return [None] * len(product.input_image_urls)
    return [media_url(settings, key) if key else None for key in product.output_keys]


@router.get("/api/status/{request_id}", response_model=StatusView)
async def request_status(
    request_id: str,
    owner: OwnerDep,
    settings: SettingsDep,
    requests: RequestsDep,
    products: ProductsDep,
    deliveries: DeliveriesDep,
    state: StateDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    # Pollers ask many times a second; counters only move forward, so a second-old answer is
    # as good as a fresh one and saves a database read per poll. The rendered JSON is what is
    # cached: serialising a 100-product page on every poll was most of the API's CPU.
    body = await state.status_cache.get_or_load(
        (request_id, owner, offset, limit),
        lambda: _status_json(
            request_id, owner, settings, requests, products, deliveries, offset, limit
        ),
    )
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": f"private, max-age={STATUS_CACHE_SECONDS}"},
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
            )
            for p in page
        ],
    )
    return view.model_dump_json().encode()


@router.get(
    "/api/download/{request_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 409: {"description": "not completed yet"}},
)
async def download_results(
    request_id: str,
    owner: OwnerDep,
    settings: SettingsDep,
    requests: RequestsDep,
    products: ProductsDep,
) -> StreamingResponse:
    record = await get_owned_request(requests, request_id, owner)
    if record.status != RequestStatus.COMPLETED:
        raise Conflict(
            {"message": f"request {request_id} is not completed yet", "status": record.status}
        )
    return StreamingResponse(
        _result_rows(settings, record, products),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="imgbatch-{request_id}.csv"'},
    )


async def _result_rows(
    settings: Settings, record: RequestRecord, products: ProductRepository
) -> AsyncIterator[str]:
    """One CSV line at a time, so memory stays flat however many products there are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: list[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([neutralize_cell(cell) for cell in cells])
        return buffer.getvalue()

    yield line([*(name for name, _ in record.columns), OUTPUT_COLUMN, ERRORS_COLUMN])
    async for product in products.iterate(record.id):
        yield line(_result_cells(settings, record, product))


def _result_cells(settings: Settings, record: RequestRecord, product: ProductRecord) -> list[str]:
    required = {
        SERIAL_COLUMN: str(product.serial_number),
        NAME_COLUMN: product.product_name,
        URLS_COLUMN: ",".join(product.input_image_urls),
    }
    cells = [
        required[role] if role else product.extra.get(name, "") for name, role in record.columns
    ]
    outputs = ",".join(url or "" for url in _output_urls(settings, product))
    errors = "; ".join(f"{e.url} -> {e.code}: {e.message}" for e in product.errors)
    return [*cells, outputs, errors]
