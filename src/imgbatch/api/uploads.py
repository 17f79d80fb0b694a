"""``POST /api/upload``: a product sheet in, a request out (``domain.intake`` does the work)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Form, UploadFile, status

from imgbatch.api.accepting import IntakeFormDep
from imgbatch.api.auth import Unauthorized
from imgbatch.api.openapi import WITH_BODY, errors
from imgbatch.api.ratelimits import TooManyRequests
from imgbatch.api.schemas import UploadAccepted
from imgbatch.core.errors import Conflict, UnprocessableEntity
from imgbatch.domain.image_events import requested_events
from imgbatch.domain.intake import intake
from imgbatch.models.requests import Priority

router = APIRouter(tags=["requests"])


@router.post(
    "/api/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses=errors(*WITH_BODY, Unauthorized, Conflict, UnprocessableEntity, TooManyRequests),
)
async def upload(
    file: UploadFile,
    form: IntakeFormDep,
    # Per-image events for webhook_url besides the request's own: `image.failed`.
    webhook_events: Annotated[list[str] | None, Form()] = None,
    priority: Annotated[Priority, Form()] = Priority.NORMAL,
) -> UploadAccepted:
    submission = dataclasses.replace(
        form.submission,
        webhook_events=tuple(requested_events(webhook_events, form.submission.webhook_url)),
        priority=priority,
    )
    return await form.once(
        lambda request_id: intake.accept_sheet(
            form.services, request_id, submission, sheet=file.file, file_name=file.filename
        )
    )
