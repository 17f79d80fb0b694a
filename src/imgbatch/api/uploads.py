"""``POST /api/upload``: a product sheet in, a request out (``domain.intake`` does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Header, Request, UploadFile, status

from imgbatch.api.accepting import once
from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import IdempotencyDep, ProfilesDep, ServicesDep, StateDep, choose_profile
from imgbatch.api.openapi import WITH_BODY, errors
from imgbatch.api.ratelimits import TooManyRequests
from imgbatch.api.schemas import UploadAccepted
from imgbatch.core.errors import Conflict, UnprocessableEntity
from imgbatch.domain.image_events import requested_events
from imgbatch.domain.intake import Submission, intake
from imgbatch.domain.metadata import parse_metadata
from imgbatch.models.requests import Priority

router = APIRouter(tags=["requests"])


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
    # Per-image events for webhook_url besides the request's own: `image.failed`.
    webhook_events: Annotated[list[str] | None, Form()] = None,
    priority: Annotated[Priority, Form()] = Priority.NORMAL,
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
        webhook_events=tuple(requested_events(webhook_events, webhook_url)),
        priority=priority,
        metadata=parse_metadata(metadata),
    )
    return await once(
        request,
        state,
        services,
        keys,
        owner,
        idempotency_key,
        lambda request_id: intake.accept_sheet(
            services, request_id, submission, sheet=file.file, file_name=file.filename
        ),
    )
