"""Owner controls on a request: retry its failed images, cancel it, or delete it."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import RequestsDep, ServicesDep, StateDep
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.api.requests import get_owned_request
from imgbatch.core.errors import Conflict, NotFound
from imgbatch.domain.controls import cancel, retry_failed
from imgbatch.domain.deletion import delete_request
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


@router.delete(
    "/api/requests/{request_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(Unauthorized, NotFound),
)
async def delete_owned_request(
    request_id: str, owner: OwnerDep, services: ServicesDep, state: StateDep
) -> Response:
    """Delete the request, its products and the outputs no other request of yours holds (a
    running request is cancelled first). Status, results and its outputs answer 404 after."""
    await delete_request(services, request_id, owner=owner)
    state.status_cache.discard(request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
