"""Single-image jobs: ``POST /api/images`` (one uploaded image) and ``GET /api/images/{id}``.

A job is an ordinary request of one product, so status, download, retry, cancel and webhooks
all work unchanged. The body gets the upload guards (``api.body_guard``: the key before a
byte is read, ``MAX_IMAGE_BYTES``). The original is checked at the door (magic bytes, header
pixel count, a JPEG's scan count: a 422 before any job exists), then kept in temporary storage
under ``tmp/`` (never served, streamed or presigned) until the job has been final for
``IMGBATCH_TEMP_TTL_HOURS``; a retry reads it from there. Its decode in the worker has the same
caps as any image's (``imaging.limits``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, Header, Request, UploadFile, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imgbatch.api.accepting import accepted, audit_upload, dispatch_new, once
from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import (
    IdempotencyDep,
    ProductsDep,
    ProfilesDep,
    RequestsDep,
    ServicesDep,
    SettingsDep,
    StateDep,
    choose_profile,
)
from imgbatch.api.openapi import OWNED_REQUEST, WITH_BODY, errors
from imgbatch.api.ratelimits import TooManyRequests
from imgbatch.api.requests import get_owned_request
from imgbatch.api.schemas import SingleImageView, UploadAccepted
from imgbatch.core.errors import (
    Conflict,
    ImageFailure,
    NotFound,
    PayloadTooLarge,
    UnprocessableEntity,
)
from imgbatch.core.logs import log_event, redact_url
from imgbatch.domain.images import single_image_json
from imgbatch.domain.services import Services
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.domain.webhook_targets import validate_webhook_url
from imgbatch.imaging.compress import inspect_image
from imgbatch.imaging.profiles import Profile
from imgbatch.models.products import ProductRecord
from imgbatch.models.requests import Priority, RequestKind, RequestRecord, RequestStatus, now
from imgbatch.sheets import NAME_COLUMN, SERIAL_COLUMN, URLS_COLUMN
from imgbatch.storage import temp_key

router = APIRouter(tags=["images"])
logger = logging.getLogger(__name__)

PATH = "/api/images"
# The result CSV of a single-image job has the columns of a minimal sheet.
_COLUMNS: list[tuple[str, str | None]] = [
    (SERIAL_COLUMN, SERIAL_COLUMN),
    (NAME_COLUMN, NAME_COLUMN),
    (URLS_COLUMN, URLS_COLUMN),
]
# The input "URL" of an uploaded image: the scheme says where it came from.
UPLOAD_SCHEME = "upload:"


@router.post(
    PATH,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses=errors(*WITH_BODY, Unauthorized, Conflict, UnprocessableEntity, TooManyRequests),
)
async def submit_image(
    request: Request,
    file: UploadFile,
    owner: OwnerDep,
    state: StateDep,
    settings: SettingsDep,
    services: ServicesDep,
    keys: IdempotencyDep,
    profiles: ProfilesDep,
    webhook_url: Annotated[str | None, Form()] = None,
    profile: Annotated[str | None, Form(max_length=64)] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> UploadAccepted:
    chosen = choose_profile(profiles, profile)
    data = await file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"the image is larger than the limit of {settings.max_image_bytes} bytes"
        )
    try:
        await run_in_threadpool(
            inspect_image,
            data,
            max_pixels=settings.max_image_pixels,
            max_jpeg_scans=settings.max_jpeg_scans,
        )
    except ImageFailure as refused:
        raise UnprocessableEntity({"code": refused.code, "message": refused.message}) from None
    name = _display_name(file.filename)
    return await once(
        request,
        state,
        services,
        keys,
        owner,
        # Its own namespace: a sheet and an image under one key are two different uploads.
        f"image:{idempotency_key}" if idempotency_key else None,
        lambda request_id: _accept(services, request_id, owner, data, name, chosen, webhook_url),
    )


def _display_name(filename: str | None) -> str:
    """The upload's file name without any directory part, or ``image``."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    printable = "".join(ch for ch in base if ch.isprintable())[:200]
    return printable or "image"


async def _accept(
    svc: Services,
    request_id: str,
    owner: str,
    data: bytes,
    name: str,
    profile: Profile,
    webhook_url: str | None,
) -> UploadAccepted:
    settings = svc.settings
    if webhook_url:
        webhook_url = validate_webhook_url(webhook_url, settings, field="webhook_url")
    webhook_secret = new_secret() if webhook_url else None
    created = now()
    expires_at = (
        created + timedelta(days=settings.result_ttl_days) if settings.result_ttl_days else None
    )
    # The original first, then the product, the request last: until the request exists nothing
    # is visible, and the sweeper finds a stray original through its index entry.
    original = temp_key(request_id)
    keep = timedelta(hours=settings.temp_ttl_hours)
    await svc.temp_objects.add(original, request_id, not_before=created + keep)
    await svc.store.put(original, data, content_type="application/octet-stream")
    await svc.products.insert_many(
        [
            ProductRecord(
                request_id=request_id,
                serial_number=1,
                position=0,
                line=1,
                product_name=name,
                input_image_urls=[f"{UPLOAD_SCHEME}{name}"],
            )
        ]
    )
    await svc.requests.create(
        RequestRecord(
            id=request_id,
            owner=owner,
            status=RequestStatus.PENDING,
            columns=_COLUMNS,
            products_total=1,
            images_total=1,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            ingested=True,
            created_at=created,
            updated_at=now(),
            expires_at=expires_at,
            kind=RequestKind.IMAGE,
            profile=profile,
            temp_key=original,
            file_name=name,
        )
    )
    await audit_upload(
        svc,
        request_id,
        owner,
        products=1,
        images=1,
        priority=Priority.NORMAL,
        profile=profile.name,
        webhook=bool(webhook_url),
    )
    await dispatch_new(svc.tasks, request_id)
    log_event(
        logger,
        "request.accepted",
        request_id=request_id,
        kind=RequestKind.IMAGE,
        bytes=len(data),
        profile=profile.name,
        webhook=redact_url(webhook_url) if webhook_url else None,
    )
    return accepted(settings, request_id, products=1, images=1, webhook_secret=webhook_secret)


@router.get(
    PATH + "/{request_id}",
    response_model=None,
    # Documented, not re-validated: the record leaves out GPS coordinates unless reported.
    responses={200: {"model": SingleImageView}, **errors(*OWNED_REQUEST)},
)
async def image_result(
    request_id: str,
    owner: OwnerDep,
    settings: SettingsDep,
    requests: RequestsDep,
    products: ProductsDep,
) -> JSONResponse:
    """The job's one image record (every variant, source, EXIF, colour, placeholder)."""
    record = await get_owned_request(requests, request_id, owner)
    if record.kind != RequestKind.IMAGE:
        raise NotFound(f"request {request_id} is not a single-image job")
    product = await products.get(request_id, 1)
    if product is None:
        raise NotFound(f"request {request_id} not found")
    return JSONResponse(single_image_json(settings, record, product))
