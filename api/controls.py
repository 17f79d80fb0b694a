"""Owner controls on a request: retry its failed images, or cancel it."""

from __future__ import annotations

import logging

from fastapi import APIRouter, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep
from api.deps import ProductsDep, QueueDep, RequestsDep, StateDep
from api.requests import get_owned_request
from models.errors import Conflict
from models.logs import log_event
from models.requests import RequestStatus

router = APIRouter(tags=["requests"])
logger = logging.getLogger(__name__)


class ControlAccepted(BaseModel):
    request_id: str
    status: str
    products_requeued: int = 0


@router.post(
    "/api/requests/{request_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ControlAccepted,
)
async def retry_failed_images(
    request_id: str,
    owner: OwnerDep,
    requests: RequestsDep,
    products: ProductsDep,
    queue: QueueDep,
    state: StateDep,
) -> ControlAccepted:
    record = await get_owned_request(requests, request_id, owner)
    if record.status != RequestStatus.COMPLETED:
        raise Conflict(
            {"message": "only a completed request can be retried", "status": record.status}
        )
    if record.images_failed == 0:
        raise Conflict({"message": "the request has no failed images", "status": record.status})
    if await requests.reopen(request_id) is None:
        raise Conflict({"message": "the request changed meanwhile; try again"})
    # Outputs that exist stay; the products go back to pending and only their failed images
    # run again. If we die between these steps the reconciler recounts and finishes the job.
    reopened = await products.reopen_failed(request_id)
    tally = await products.tally(request_id)
    await requests.set_counters(
        request_id,
        products_done=tally["products_done"],
        images_done=tally["images_done"],
        images_failed=tally["images_failed"],
    )
    await run_in_threadpool(queue.dispatch, request_id)
    state.status_cache.discard(request_id)
    log_event(logger, "request.retried", request_id=request_id, products=reopened)
    return ControlAccepted(
        request_id=request_id, status=RequestStatus.IN_PROGRESS, products_requeued=reopened
    )


@router.post("/api/requests/{request_id}/cancel", response_model=ControlAccepted)
async def cancel_request(
    request_id: str, owner: OwnerDep, requests: RequestsDep, state: StateDep
) -> ControlAccepted:
    record = await get_owned_request(requests, request_id, owner)
    cancelled = await requests.cancel(request_id)
    if cancelled is None:
        raise Conflict({"message": "the request has already finished", "status": record.status})
    state.status_cache.discard(request_id)
    log_event(logger, "request.cancelled", request_id=request_id)
    return ControlAccepted(request_id=request_id, status=cancelled.status)
