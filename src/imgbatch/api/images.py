"""Single-image jobs: ``POST /api/images`` (one uploaded image) and ``GET /api/images/{id}``.

A job is an ordinary request of one product, so status, download, retry, cancel and webhooks
all work unchanged. The body gets the upload guards (``api.body_guard``: the key before a
byte is read, ``MAX_IMAGE_BYTES``). The original is checked at the door (magic bytes, header
pixel count, a JPEG's scan count: a 422 before any job exists), then kept in temporary storage
under ``tmp/`` (never served, streamed or presigned) until the job has been final for
``IMGBATCH_TEMP_TTL_HOURS``; a retry reads it from there. Its decode in the worker has the same
caps as any image's (``imaging.limits``). ``domain.intake`` makes the request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Header, Request, UploadFile, status
from fastapi.responses import JSONResponse

from imgbatch.api.accepting import once
from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import (
    IdempotencyDep,
    OwnedRequestDep,
    ProductsDep,
    ProfilesDep,
    ServicesDep,
    SettingsDep,
    StateDep,
    choose_profile,
)
from imgbatch.api.openapi import OWNED_REQUEST, WITH_BODY, errors
from imgbatch.api.ratelimits import TooManyRequests
from imgbatch.api.schemas import SingleImageView, UploadAccepted
from imgbatch.core.errors import Conflict, NotFound, PayloadTooLarge, UnprocessableEntity
from imgbatch.domain.images import single_image_json
from imgbatch.domain.intake import Submission, intake
from imgbatch.domain.metadata import parse_metadata
from imgbatch.models.requests import RequestKind

router = APIRouter(tags=["images"])

PATH = "/api/images"


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
    metadata: Annotated[str | None, Form()] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> UploadAccepted:
    submission = Submission(
        owner=owner,
        profile=choose_profile(profiles, profile),
        webhook_url=webhook_url,
        metadata=parse_metadata(metadata),
    )
    data = await file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"the image is larger than the limit of {settings.max_image_bytes} bytes"
        )
    await intake.check_image(settings, data)
    return await once(
        request,
        state,
        services,
        keys,
        owner,
        # Its own namespace: a sheet and an image under one key are two different uploads.
        f"image:{idempotency_key}" if idempotency_key else None,
        lambda request_id: intake.accept_image(
            services, request_id, submission, data=data, file_name=file.filename
        ),
    )


@router.get(
    PATH + "/{request_id}",
    response_model=None,
    # Documented, not re-validated: the record leaves out GPS coordinates unless reported.
    responses={200: {"model": SingleImageView}, **errors(*OWNED_REQUEST)},
)
async def image_result(
    record: OwnedRequestDep, settings: SettingsDep, products: ProductsDep
) -> JSONResponse:
    """The job's one image record (every variant, source, EXIF, colour, placeholder)."""
    if record.kind != RequestKind.IMAGE:
        raise NotFound(f"request {record.id} is not a single-image job")
    product = await products.get(record.id, 1)
    if product is None:
        raise NotFound(f"request {record.id} not found")
    return JSONResponse(single_image_json(settings, record, product))
