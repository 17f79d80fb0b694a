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

from fastapi import APIRouter, UploadFile, status
from fastapi.responses import JSONResponse

from imgbatch.api.accepting import IntakeFormDep
from imgbatch.api.auth import Unauthorized
from imgbatch.api.deps import OwnedRequestDep, ProductsDep, SettingsDep
from imgbatch.api.openapi import OWNED_REQUEST, WITH_BODY, errors
from imgbatch.api.ratelimits import TooManyRequests
from imgbatch.api.schemas import SingleImageView, UploadAccepted
from imgbatch.core.errors import Conflict, NotFound, PayloadTooLarge, UnprocessableEntity
from imgbatch.domain.images import single_image_json
from imgbatch.domain.intake import intake
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
    file: UploadFile, form: IntakeFormDep, settings: SettingsDep
) -> UploadAccepted:
    data = await file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"the image is larger than the limit of {settings.max_image_bytes} bytes"
        )
    await intake.check_image(settings, data)
    return await form.once(
        lambda request_id: intake.accept_image(
            form.services, request_id, form.submission, data=data, file_name=file.filename
        ),
        # Its own namespace: a sheet and an image under one key are two different uploads.
        namespace="image:",
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
