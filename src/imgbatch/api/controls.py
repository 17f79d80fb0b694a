"""Owner controls on a request: retry its failed images, or cancel it."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from imgbatch.api.deps import OwnedRequestDep, ServicesDep, StateDep
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.core.errors import Conflict
from imgbatch.domain.controls import cancel, retry_failed
from imgbatch.domain.inflight import TooManyInFlight
from imgbatch.models.requests import RequestStatus

router = APIRouter(tags=["requests"])


class ControlAccepted(BaseModel):
    request_id: str
    status: str
    products_requeued: int = 0


@router.post(
    "/api/requests/{request_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ControlAccepted,
    responses=errors(*OWNED_REQUEST, Conflict, TooManyInFlight),
)
async def retry_failed_images(
    record: OwnedRequestDep, services: ServicesDep, state: StateDep
) -> ControlAccepted:
    request_id = record.id
    reopened = await retry_failed(services, record)
    state.status_cache.discard(request_id)
    return ControlAccepted(
        request_id=request_id, status=RequestStatus.IN_PROGRESS, products_requeued=reopened
    )


@router.post(
    "/api/requests/{request_id}/cancel",
    response_model=ControlAccepted,
    responses=errors(*OWNED_REQUEST, Conflict),
)
async def cancel_request(
    record: OwnedRequestDep, services: ServicesDep, state: StateDep
) -> ControlAccepted:
    request_id = record.id
    cancelled = await cancel(services, record)
    state.status_cache.discard(request_id)
    return ControlAccepted(request_id=request_id, status=cancelled.status)
