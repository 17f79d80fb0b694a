"""``POST /api/upload``: validate a product sheet, stage it, and hand it to the dispatcher."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, UploadFile, status
from starlette.concurrency import run_in_threadpool

from api.deps import ChunksDep, QueueDep, RequestsDep, SettingsDep
from api.schemas import UploadAccepted
from api.sheets import SheetFormatError, SheetLimits, SheetReader, SheetRow, open_sheet
from api.urls import download_url, status_url
from models.errors import UnprocessableEntity
from models.logs import log_event, redact_url
from models.products import ProductRecord
from models.requests import RequestRecord, RequestStatus, now
from models.staging import CHUNK_MAX_BYTES, CHUNK_MAX_ROWS, StagedChunkRepository
from worker.network import literal_host_reason

router = APIRouter(tags=["requests"])
logger = logging.getLogger(__name__)


@router.post("/api/upload", status_code=status.HTTP_202_ACCEPTED, response_model=UploadAccepted)
async def upload(
    file: UploadFile,
    settings: SettingsDep,
    requests: RequestsDep,
    chunks: ChunksDep,
    queue: QueueDep,
    webhook_url: Annotated[str | None, Form()] = None,
) -> UploadAccepted:
    request_id = uuid.uuid4().hex
    limits = SheetLimits(
        max_rows=settings.max_csv_rows,
        max_urls_per_row=settings.max_urls_per_row,
        max_url_length=settings.max_url_length,
        url_check=None if settings.allow_private_networks else literal_host_reason,
    )
    try:
        reader = await run_in_threadpool(open_sheet, file.file, limits)
        products, images = await _stage_rows(request_id, reader, chunks)
    except SheetFormatError as exc:
        await chunks.discard(request_id)
        raise UnprocessableEntity(exc.message) from exc
    if reader.error_count:
        await chunks.discard(request_id)
        raise UnprocessableEntity(_row_errors(reader))

    # The request document is written last: until it exists the upload is invisible, so a crash
    # mid-upload leaves only staged chunks behind, never a half-visible request.
    created = now()
    await requests.create(
        RequestRecord(
            id=request_id,
            status=RequestStatus.PENDING,
            columns=reader.column_roles,
            products_total=products,
            images_total=images,
            webhook_url=webhook_url,
            created_at=created,
            updated_at=created,
        )
    )
    try:
        await run_in_threadpool(queue.dispatch, request_id)
    except Exception as exc:  # the broker is down: the reconciler dispatches it later
        log_event(
            logger,
            "request.dispatch_deferred",
            logging.WARNING,
            request_id=request_id,
            error=type(exc).__name__,
        )
    log_event(
        logger,
        "request.accepted",
        request_id=request_id,
        products=products,
        images=images,
        webhook=redact_url(webhook_url) if webhook_url else None,
    )
    return UploadAccepted(
        request_id=request_id,
        status=RequestStatus.PENDING,
        status_url=status_url(settings, request_id),
        download_url=download_url(settings, request_id),
        products=products,
        images=images,
    )


async def _stage_rows(
    request_id: str, reader: SheetReader, chunks: StagedChunkRepository
) -> tuple[int, int]:
    rows = reader.rows()
    products = images = seq = 0
    while True:
        # Parsing is CPU work: do it off the event loop, one chunk at a time.
        batch = await run_in_threadpool(_next_chunk, rows)
        if not batch:
            return products, images
        if reader.error_count == 0:  # once the sheet is known bad, only validation goes on
            await chunks.stage(
                request_id, seq, [_product_document(request_id, row) for row in batch]
            )
            seq += 1
        products += len(batch)
        images += sum(len(row.image_urls) for row in batch)


def _next_chunk(rows: Iterator[SheetRow]) -> list[SheetRow]:
    batch: list[SheetRow] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += sum(len(url) for url in row.image_urls) + len(row.product_name) + 64
        if len(batch) >= CHUNK_MAX_ROWS or size >= CHUNK_MAX_BYTES:
            break
    return batch


def _product_document(request_id: str, row: SheetRow) -> dict[str, Any]:
    return ProductRecord(
        request_id=request_id,
        serial_number=row.serial_number,
        position=row.position,
        line=row.line,
        product_name=row.product_name,
        input_image_urls=row.image_urls,
        extra=row.extra,
    ).to_document()


def _row_errors(reader: SheetReader) -> dict[str, Any]:
    listed = [{"line": e.line, "column": e.column, "reason": e.reason} for e in reader.errors]
    return {
        "message": f"the sheet has {reader.error_count} invalid row(s); nothing was stored",
        "errors": listed,
        "total_errors": reader.error_count,
        "omitted_errors": reader.error_count - len(listed),
    }
