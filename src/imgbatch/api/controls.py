"""Owner controls on a request: retry its failed images, or cancel it."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from imgbatch.api.auth import OwnerDep
from imgbatch.api.deps import RequestsDep, ServicesDep, StateDep
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.api.requests import get_owned_request
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
    request_id: str,
    owner: OwnerDep,
    requests: RequestsDep,
    services: ServicesDep,
    state: StateDep,
) -> ControlAccepted:
    record = await get_owned_request(requests, request_id, owner)
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
    request_id: str, owner: OwnerDep, requests: RequestsDep, services: ServicesDep, state: StateDep
) -> ControlAccepted:
    record = await get_owned_request(requests, request_id, owner)
    cancelled = await cancel(services, record)
    state.status_cache.discard(request_id)
    return ControlAccepted(request_id=request_id, status=cancelled.status)
