"""Owner controls on a request: retry its failed images, or cancel it."""

from __future__ import annotations

import logging

from imgbatch.core import metrics
from imgbatch.core.errors import Conflict
from imgbatch.core.logs import log_event
from imgbatch.domain import inflight
from imgbatch.domain.audit import record as audit
from imgbatch.domain.completion import finished
from imgbatch.domain.events import status_changed
from imgbatch.domain.services import Services
from imgbatch.models.requests import RequestRecord, RequestStatus

logger = logging.getLogger(__name__)


async def retry_failed(svc: Services, record: RequestRecord) -> int:
    """Send a completed request's failed images round again; returns the products reopened."""
    if record.status != RequestStatus.COMPLETED:
        raise Conflict(
            {"message": "only a completed request can be retried", "status": record.status}
        )
    if record.images_failed == 0:
        raise Conflict({"message": "the request has no failed images", "status": record.status})
    # Running again, it counts against its owner's requests in flight (429 when they are all
    # taken); a retry that then fails gives back the slot it took.
    slot = await inflight.reserve(svc, record.owner, record.id)
    try:
        reopened = await _reopen(svc, record)
    except BaseException:
        await inflight.give_back(svc, slot)
        raise
    log_event(logger, "request.retried", request_id=record.id, products=reopened)
    await audit(svc, record.id, "request.retried", products=reopened)
    await status_changed(svc.events, record.id, RequestStatus.IN_PROGRESS)
    try:
        await svc.tasks.dispatch(record.id)
    except Exception as exc:
        # The change is made and stays made: the reconciler finds an in-progress request that
        # has not moved and sends its unfinished products, so the caller is told it worked.
        log_event(
            logger,
            "request.dispatch_deferred",
            logging.WARNING,
            request_id=record.id,
            error=type(exc).__name__,
        )
    return reopened


async def _reopen(svc: Services, record: RequestRecord) -> int:
    # Outputs that exist stay; the products go back to pending and only their failed images
    # run again. Products first: while the request still says completed no worker touches
    # them. Then one conditional write moves the request back to in_progress together with
    # counters that leave the reopened products out. A retry that dies between the two leaves
    # a completed request with pending products; retrying again finishes the job.
    reopened = await svc.products.reopen_failed(record.id)
    tally = await svc.products.tally(record.id)
    moved = await svc.requests.reopen(
        record.id,
        completions=record.completions,
        products_done=tally["products_done"],
        images_done=tally["images_done"],
        images_failed=tally["images_failed"],
    )
    if moved is None:
        raise Conflict({"message": "the request changed meanwhile; try again"})
    return reopened


async def cancel(svc: Services, record: RequestRecord) -> RequestRecord:
    """Stop a pending or running request; queued products are dropped unprocessed."""
    cancelled = await svc.requests.cancel(record.id)
    if cancelled is None:
        raise Conflict({"message": "the request has already finished", "status": record.status})
    await finished(svc, cancelled)
    log_event(logger, "request.cancelled", request_id=record.id)
    await status_changed(svc.events, record.id, cancelled.status)
    metrics.REQUESTS.labels("cancelled").inc()
    await audit(svc, record.id, "request.cancelled")
    return cancelled
