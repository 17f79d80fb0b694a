"""``POST /api/upload``: validate a product sheet, stage it, and hand it to the dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Request, UploadFile, status
from starlette.concurrency import run_in_threadpool

from imgbatch.api.accepting import accepted, audit_upload, dispatch_new, once
from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import IdempotencyDep, ProfilesDep, ServicesDep, StateDep, choose_profile
from imgbatch.api.openapi import WITH_BODY, errors
from imgbatch.api.ratelimits import TooManyRequests
from imgbatch.api.schemas import UploadAccepted
from imgbatch.core.errors import Conflict, UnprocessableEntity
from imgbatch.core.logs import log_event, redact_url
from imgbatch.domain.services import Services
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.domain.webhook_targets import validate_webhook_url
from imgbatch.imaging.profiles import Profile
from imgbatch.models.products import new_product_document
from imgbatch.models.requests import Priority, RequestRecord, RequestStatus, now
from imgbatch.models.staging import (
    CHUNK_MAX_BYTES,
    CHUNK_MAX_ROWS,
    ROW_OVERHEAD_BYTES,
    StagedChunkRepository,
)
from imgbatch.netguard import literal_host_reason
from imgbatch.sheets import (
    SheetFormatError,
    SheetLimits,
    SheetReader,
    SheetRow,
    open_sheet,
    utf8_length,
)

router = APIRouter(tags=["requests"])
logger = logging.getLogger(__name__)


@router.post(
    "/api/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses=errors(*WITH_BODY, Unauthorized, Conflict, UnprocessableEntity, TooManyRequests),
)
async def upload(
    request: Request,
    file: UploadFile,
    owner: OwnerDep,
    state: StateDep,
    services: ServicesDep,
    keys: IdempotencyDep,
    profiles: ProfilesDep,
    webhook_url: Annotated[str | None, Form()] = None,
    priority: Annotated[Priority, Form()] = Priority.NORMAL,
    profile: Annotated[str | None, Form(max_length=64)] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> UploadAccepted:
    chosen = choose_profile(profiles, profile)
    return await once(
        request,
        state,
        services,
        keys,
        owner,
        idempotency_key,
        lambda request_id: _accept(
            services, request_id, file, owner, webhook_url, priority, chosen
        ),
    )


async def _accept(
    svc: Services,
    request_id: str,
    file: UploadFile,
    owner: str,
    webhook_url: str | None,
    priority: Priority,
    profile: Profile,
) -> UploadAccepted:
    """Validate and stage the sheet, then write the request; nothing visible until the end."""
    settings, chunks = svc.settings, svc.chunks
    # Checked before the sheet is read: a bad URL is refused without staging anything.
    if webhook_url:
        webhook_url = validate_webhook_url(webhook_url, settings, field="webhook_url")
    # Its own secret per request, rather than one for the whole installation: a receiver can
    # verify its deliveries without being able to forge anyone else's.
    webhook_secret = new_secret() if webhook_url else None
    limits = SheetLimits(
        max_rows=settings.max_csv_rows,
        max_urls_per_row=settings.max_urls_per_row,
        max_url_length=settings.max_url_length,
        max_columns=settings.max_csv_columns,
        max_extra_bytes=settings.max_extra_bytes_per_row,
        url_check=None if settings.allow_private_networks else literal_host_reason,
    )
    created = now()
    expires_at = (
        created + timedelta(days=settings.result_ttl_days) if settings.result_ttl_days else None
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
    await svc.requests.create(
        RequestRecord(
            id=request_id,
            owner=owner,
            status=RequestStatus.PENDING,
            columns=reader.column_roles,
            products_total=products,
            images_total=images,
            priority=priority,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            created_at=created,
            updated_at=now(),
            expires_at=expires_at,
            profile=profile,
            file_name=(file.filename or "")[:255] or None,
        )
    )
    await audit_upload(
        svc,
        request_id,
        owner,
        products=products,
        images=images,
        priority=priority,
        profile=profile.name,
        webhook=bool(webhook_url),
    )
    await dispatch_new(svc.tasks, request_id)
    log_event(
        logger,
        "request.accepted",
        request_id=request_id,
        products=products,
        images=images,
        profile=profile.name,
        webhook=redact_url(webhook_url) if webhook_url else None,
    )
    return accepted(
        settings, request_id, products=products, images=images, webhook_secret=webhook_secret
    )


async def _stage_rows(
    request_id: str,
    reader: SheetReader,
    chunks: StagedChunkRepository,
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
        # UTF-8 bytes, as MongoDB stores them, of everything a row brings: a chunk sized by
        # characters and without the extras could pass the 16 MB document limit (a 500).
        size += (
            sum(utf8_length(url) for url in row.image_urls)
            + utf8_length(row.product_name)
            + row.extra_bytes
            + ROW_OVERHEAD_BYTES
        )
        if len(batch) >= CHUNK_MAX_ROWS or size >= CHUNK_MAX_BYTES:
            break
    return batch


def _product_document(request_id: str, row: SheetRow) -> dict[str, Any]:
    return new_product_document(
        request_id=request_id,
        serial_number=row.serial_number,
        position=row.position,
        line=row.line,
        product_name=row.product_name,
        input_image_urls=row.image_urls,
        extra=row.extra,
    )


def _row_errors(reader: SheetReader) -> dict[str, Any]:
    listed = [{"line": e.line, "column": e.column, "reason": e.reason} for e in reader.errors]
    return {
        "message": f"the sheet has {reader.error_count} invalid row(s); nothing was stored",
        "errors": listed,
        "total_errors": reader.error_count,
        "omitted_errors": reader.error_count - len(listed),
    }
