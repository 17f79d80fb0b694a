"""Owner controls on a request: retry its failed images, or cancel it."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from api.auth import OwnerDep
from api.deps import RequestsDep, ServicesDep, StateDep
from api.openapi import OWNED_REQUEST, errors
from api.requests import get_owned_request
from core.errors import Conflict
from domain.controls import cancel, retry_failed
from domain.inflight import TooManyInFlight
from models.requests import RequestStatus

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
