"""Reading requests back: ``GET /api/requests`` (the key's list), ``GET /api/status/{id}``,
``GET /api/download/{id}`` (the result CSV, or only its failed rows) and
``GET /api/requests/{id}/results`` (every image record, as JSON Lines)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import (
    OwnedRequestDep,
    ProductsDep,
    RequestsDep,
    SettingsDep,
    StateDep,
    StoreDep,
    get_owned_request,
)
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.api.paging import Offset
from imgbatch.api.resultfiles import chunked as _chunked
from imgbatch.api.resultfiles import serve_result_file
from imgbatch.api.schemas import (
    RequestListView,
    RequestSummaryView,
    StatusView,
    request_webhook_view,
)
from imgbatch.core.errors import Conflict, RangeNotSatisfiable, UnprocessableEntity
from imgbatch.core.settings import Settings
from imgbatch.domain.metadata import metadata_object
from imgbatch.domain.results import (
    failed_rows,
    generation_folder,
    result_lines,
    result_rows,
    shopify_rows,
)
from imgbatch.domain.services import Services
from imgbatch.domain.status import ProductsView, no_gps, product_view, stored_products
from imgbatch.models.products import ProductRecord
from imgbatch.models.requests import RequestRecord, RequestStatus
from imgbatch.storage import StorageUnavailable

router = APIRouter(tags=["requests"])


@router.get(
    "/api/status/{request_id}",
    response_model=StatusView,
    responses=errors(*OWNED_REQUEST, UnprocessableEntity),
)
async def request_status(
    request_id: str,
    owner: OwnerDep,
    state: StateDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    # Pollers ask many times a second; counters only move forward, so a second-old answer is
    # as good as a fresh one and saves a database read per poll. The rendered JSON is what is
    # cached: serialising a 100-product page on every poll was most of the API's CPU. A status
    # change (cancel, retry, completion) drops it in every API process at once (AppState.forget).
    # The state is the route's one dependency besides the owner: a cached answer is most of
    # the polls, and each dependency FastAPI resolves is work on every one of them.
    settings = state.settings
    body = await state.status_cache.get_or_load(
        (request_id, owner, offset, limit),
        lambda: _status_json(state.services, request_id, owner, offset, limit),
    )
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": f"private, max-age={int(settings.status_cache_seconds)}"},
    )


async def _status_json(
    svc: Services, request_id: str, owner: str, offset: int, limit: int
) -> bytes:
    settings = svc.settings
    record = await get_owned_request(svc.requests, request_id, owner)
    stored = None
    if record.status == RequestStatus.COMPLETED:
        # Its products are fixed until a retry: the page's array as the completion stored it.
        folder = generation_folder(settings, record)
        stored = await stored_products(svc.store, folder, record, offset, limit)
    page = (
        []
        if stored is not None
        else await svc.products.page(request_id, offset=offset, limit=limit)
    )
    delivery = await svc.deliveries.for_request_target(record.id) if record.webhook_url else None
    head = StatusView(
        **_summary(record).model_dump(),
        webhook=request_webhook_view(record, delivery),
        offset=offset,
        limit=limit,
        products=[],
    )
    if stored is not None:
        return _with_products(head, stored)
    if not page:
        return head.model_dump_json().encode()
    # Rendering a page of products is tens of ms of CPU on a busy machine; in a thread, the
    # event loop gets the GIL back every few ms and keeps answering the polls the cache can
    # (in the loop, every poll that came in meanwhile waited for the whole page).
    return await asyncio.to_thread(_render_page, settings, head, page)


def _render_page(settings: Settings, head: StatusView, page: list[ProductRecord]) -> bytes:
    exclude = no_gps(settings)
    products = ProductsView(products=[product_view(settings, p) for p in page])
    array = products.model_dump_json(
        exclude=None if exclude is None else {"products": {"__all__": exclude}}
    ).encode()
    return _with_products(head, array.removeprefix(b'{"products":').removesuffix(b"}"))


def _with_products(head: StatusView, products: bytes) -> bytes:
    """The page with its ``products`` array: the view's last field, so its empty array and the
    closing brace end the body rendered without them."""
    return head.model_dump_json().encode().removesuffix(_EMPTY_PRODUCTS) + products + b"}"


_EMPTY_PRODUCTS = b"[]}"


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
    responses={
        200: {"content": {"text/csv": {}}},
        304: {"description": "`If-None-Match` names the current ETag: unchanged"},
        **errors(
            *OWNED_REQUEST, Conflict, UnprocessableEntity, RangeNotSatisfiable, StorageUnavailable
        ),
    },
)
async def download_results(
    record: OwnedRequestDep,
    request: Request,
    settings: SettingsDep,
    products: ProductsDep,
    store: StoreDep,
    only: Annotated[
        Literal["failed"] | None,
        Query(description="`failed`: only rows with a failed image, in the input's columns"),
    ] = None,
    format: Annotated[
        Literal["csv", "shopify"],
        Query(
            description="`shopify`: a Shopify product CSV upload's file as uploaded, with its "
            "`Image Src` and `Variant Image` URLs replaced by the hosted outputs"
        ),
    ] = "csv",
) -> Response:
    """The result CSV of a completed request (or only its failed rows, in the input's columns).

    Streamed from the file stored at completion: `ETag` (`If-None-Match` gets 304),
    `Content-Length`, and `Range` (206 with those bytes, 416 past the end); until the file is
    stored, the same bytes are rendered live, without length or ranges.
    """
    request_id = record.id
    if record.status != RequestStatus.COMPLETED:
        raise Conflict(
            {"message": f"request {request_id} is not completed yet", "status": record.status}
        )
    if format == "shopify":
        if record.shopify_header is None:
            raise UnprocessableEntity(
                f"request {request_id} was not uploaded as a Shopify product CSV; "
                "format=shopify needs one"
            )
        return await serve_result_file(
            request,
            settings,
            store,
            record,
            "shopify",
            f'attachment; filename="imgbatch-{request_id}-shopify.csv"',
            lambda: shopify_rows(settings, record, products),
        )
    name = f"imgbatch-{request_id}{'-failed' if only else ''}.csv"
    return await serve_result_file(
        request,
        settings,
        store,
        record,
        "failed" if only else "csv",
        f'attachment; filename="{name}"',
        lambda: failed_rows(record, products) if only else result_rows(settings, record, products),
    )


@router.get(
    "/api/requests/{request_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}},
        304: {"description": "Completed requests: `If-None-Match` names the current ETag"},
        **errors(*OWNED_REQUEST, RangeNotSatisfiable, StorageUnavailable),
    },
)
async def request_results(
    record: OwnedRequestDep,
    request: Request,
    settings: SettingsDep,
    products: ProductsDep,
    store: StoreDep,
) -> Response:
    """Every image record of the request, one JSON object per line, in input order.

    Streamed, so memory stays flat however large the request; records of images not done yet
    say ``pending``. A completed request's file comes from the media store, with an ETag (304)
    and byte ranges (206, 416), as the result CSV's.
    """
    disposition = f'inline; filename="imgbatch-{record.id}.jsonl"'
    if record.status != RequestStatus.COMPLETED:
        return StreamingResponse(
            _chunked(result_lines(settings, record, products)),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": disposition},
        )
    return await serve_result_file(
        request,
        settings,
        store,
        record,
        "jsonl",
        disposition,
        lambda: result_lines(settings, record, products),
    )
