"""``POST /api/upload``: validate a product sheet, stage it, and hand it to the dispatcher."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Form, Header, Request, UploadFile, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from api.auth import OwnerDep, Unauthorized
from api.deps import IdempotencyDep, ServicesDep, StateDep
from api.openapi import errors
from api.ratelimits import TooManyRequests, limit_uploads
from api.schemas import UploadAccepted
from core.errors import Conflict, PayloadTooLarge, UnprocessableEntity
from core.logs import bind_context, log_event, redact_url
from domain import inflight
from domain.audit import key_name, record
from domain.services import Services
from domain.urls import download_url, status_url
from domain.webhook_signing import new_secret
from domain.webhook_targets import validate_webhook_url
from models.idempotency import IdempotencyRepository
from models.products import new_product_document
from models.requests import Priority, RequestRecord, RequestStatus, now
from models.staging import (
    CHUNK_MAX_BYTES,
    CHUNK_MAX_ROWS,
    ROW_OVERHEAD_BYTES,
    StagedChunkRepository,
)
from netguard import literal_host_reason
from sheets import SheetFormatError, SheetLimits, SheetReader, SheetRow, open_sheet, utf8_length

router = APIRouter(tags=["requests"])
logger = logging.getLogger(__name__)


@router.post(
    "/api/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses=errors(Unauthorized, Conflict, PayloadTooLarge, UnprocessableEntity, TooManyRequests),
)
async def upload(
    request: Request,
    file: UploadFile,
    owner: OwnerDep,
    state: StateDep,
    services: ServicesDep,
    keys: IdempotencyDep,
    webhook_url: Annotated[str | None, Form()] = None,
    priority: Annotated[Priority, Form()] = Priority.NORMAL,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> UploadAccepted:
    if idempotency_key is None:
        await limit_uploads(request, owner, state)
        return await _accept(file, owner, webhook_url, priority, services)
    fingerprint = await _fingerprint(request)
    # A replay is answered before anything counts against the caller's limits: it creates
    # nothing, so it uses up neither the rate limit nor a request in flight.
    replayed = await _replay(keys, owner, idempotency_key, fingerprint)
    if replayed is not None:
        await limit_uploads(request, owner, state, consume=False)
        return replayed
    await limit_uploads(request, owner, state)
    lease = timedelta(seconds=services.settings.idempotency_lease_seconds)
    token = await keys.reserve(owner, idempotency_key, fingerprint, lease=lease)
    if token is None:  # another upload with this key got there since we looked
        replayed = await _replay(keys, owner, idempotency_key, fingerprint)
        if replayed is None:
            raise Conflict("an upload with this Idempotency-Key is still being processed")
        return replayed
    try:
        accepted = await _accept(file, owner, webhook_url, priority, services)
    except BaseException:
        await keys.release(owner, idempotency_key, token)
        raise
    await keys.complete(owner, idempotency_key, token, accepted.model_dump())
    return accepted


async def _replay(
    keys: IdempotencyRepository, owner: str, key: str, fingerprint: str
) -> UploadAccepted | None:
    """The stored answer for this key; None if the key is free (or its upload died)."""
    existing = await keys.get(owner, key)
    if existing is None:
        return None
    if existing.response is None and (existing.lease_until is None or existing.lease_until < now()):
        return None  # reserved by an upload that died before answering: ours to take over
    if existing.fingerprint != fingerprint:
        raise UnprocessableEntity(
            "this Idempotency-Key was already used for a different upload "
            "(another file or other form fields)"
        )
    if existing.response is None:
        raise Conflict("an upload with this Idempotency-Key is still being processed")
    return UploadAccepted.model_validate(existing.response)


async def _accept(
    file: UploadFile,
    owner: str,
    webhook_url: str | None,
    priority: Priority,
    svc: Services,
) -> UploadAccepted:
    request_id = uuid.uuid4().hex
    bind_context(request_id=request_id)
    settings = svc.settings
    # Checked before the sheet is read: a bad URL is refused without staging anything.
    if webhook_url:
        webhook_url = validate_webhook_url(webhook_url, settings, field="webhook_url")
    # The request's place among its owner's requests in flight, taken before anything is read
    # or stored; it goes with the request, or is given back if the upload fails.
    slot = await inflight.reserve(svc, owner, request_id)
    try:
        accepted = await _stage(file, owner, request_id, webhook_url, priority, svc)
    except BaseException:
        await inflight.give_back(svc, slot)
        raise
    try:
        await svc.tasks.dispatch(request_id)
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
        products=accepted.products,
        images=accepted.images,
        webhook=redact_url(webhook_url) if webhook_url else None,
    )
    return accepted


async def _stage(
    file: UploadFile,
    owner: str,
    request_id: str,
    webhook_url: str | None,
    priority: Priority,
    svc: Services,
) -> UploadAccepted:
    """Validate and stage the sheet, then write the request; nothing visible until the end."""
    settings, requests, chunks = svc.settings, svc.requests, svc.chunks
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
    await requests.create(
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
            file_name=(file.filename or "")[:255] or None,
        )
    )
    await record(
        svc,
        request_id,
        "request.uploaded",
        key=await key_name(svc, owner),
        products=products,
        images=images,
        priority=priority,
        webhook=bool(webhook_url),
    )
    return UploadAccepted(
        request_id=request_id,
        status=RequestStatus.PENDING,
        status_url=status_url(settings, request_id),
        download_url=download_url(settings, request_id),
        products=products,
        images=images,
        webhook_secret=webhook_secret,
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


async def _fingerprint(request: Request) -> str:
    """What makes two uploads the same: every form field as sent, the file by its content.

    Taken from the parsed form rather than from named parameters, so a field added later is
    covered without anyone remembering to add it here.
    """
    form = await request.form()  # parsed once already, for the route's parameters
    return await run_in_threadpool(_digest, list(form.multi_items()))


def _digest(items: list[tuple[str, str | StarletteUpload]]) -> str:
    fields = []
    for name, value in sorted(items, key=lambda item: item[0]):
        if isinstance(value, str):
            fields.append([name, "text", value])
            continue
        fields.append([name, "file", _file_digest(value.file)])
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _file_digest(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


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
