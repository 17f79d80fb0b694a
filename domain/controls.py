"""Owner controls on a request: retry its failed images, or cancel it."""

from __future__ import annotations

import logging

from core.errors import Conflict
from core.logs import log_event
from domain.services import Services
from models.requests import RequestRecord, RequestStatus

logger = logging.getLogger(__name__)


async def retry_failed(svc: Services, record: RequestRecord) -> int:
    """Send a completed request's failed images round again; returns the products reopened."""
    if record.status != RequestStatus.COMPLETED:
        raise Conflict(
            {"message": "only a completed request can be retried", "status": record.status}
        )
    if record.images_failed == 0:
        raise Conflict({"message": "the request has no failed images", "status": record.status})
    if await svc.requests.reopen(record.id) is None:
        raise Conflict({"message": "the request changed meanwhile; try again"})
    # Outputs that exist stay; the products go back to pending and only their failed images
    # run again. If we die between these steps the reconciler recounts and finishes the job.
    reopened = await svc.products.reopen_failed(record.id)
    tally = await svc.products.tally(record.id)
    await svc.requests.set_counters(
        record.id,
        products_done=tally["products_done"],
        images_done=tally["images_done"],
        images_failed=tally["images_failed"],
    )
    await svc.tasks.dispatch(record.id)
    log_event(logger, "request.retried", request_id=record.id, products=reopened)
    return reopened


async def cancel(svc: Services, record: RequestRecord) -> RequestRecord:
    """Stop a pending or running request; queued products are dropped unprocessed."""
    cancelled = await svc.requests.cancel(record.id)
    if cancelled is None:
        raise Conflict({"message": "the request has already finished", "status": record.status})
    log_event(logger, "request.cancelled", request_id=record.id)
    return cancelled
