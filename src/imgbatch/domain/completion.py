"""The completion checker: flips a request to its final state exactly once, and says so once.

Whoever wins the conditional transition in MongoDB sends the ``request_finished`` notice, so a
request is announced once however many task runs, reconciler passes or retries race to it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from imgbatch.core import metrics
from imgbatch.core.logs import log_event
from imgbatch.domain import inflight
from imgbatch.domain.audit import record
from imgbatch.domain.events import status_changed
from imgbatch.domain.services import Services
from imgbatch.models.requests import RequestRecord, now

logger = logging.getLogger(__name__)

# A request that finishes close to (or after) its expiry is still kept this long after it
# finished, so whoever was told it finished can fetch its results.
FINISHED_GRACE = timedelta(days=1)


async def finished(svc: Services, request: RequestRecord) -> None:
    """What every move to a final state is followed by (complete, fail, cancel)."""
    await inflight.release(svc, request.id)
    keep_until = now() + FINISHED_GRACE
    if request.expires_at is not None and request.expires_at < keep_until:
        await svc.requests.keep_until(request.id, keep_until)


async def complete_when_counted(svc: Services, request_id: str) -> bool:
    """Complete the request if every product is counted; run at the end of each product task.

    Once per task rather than after each product's count: one read per chunk, and a re-run of
    a chunk whose products were all counted before a crash still completes the request.
    """
    request = await svc.requests.get(request_id)
    if request is None or request.products_done < request.products_total:
        return False
    return await complete_if_finished(svc, request_id)


async def complete_if_finished(svc: Services, request_id: str) -> bool:
    """Make the move to ``completed`` if every product is counted; True for the one winner."""
    completed = await svc.requests.complete_if_counted(request_id)
    if completed is None:
        return False
    await finished(svc, completed)
    log_event(
        logger,
        "request.completed",
        request_id=request_id,
        images_done=completed.images_done,
        images_failed=completed.images_failed,
    )
    metrics.REQUESTS.labels("completed").inc()
    await record(
        svc,
        request_id,
        "request.completed",
        images_done=completed.images_done,
        images_failed=completed.images_failed,
    )
    # Only the caller that won the transition gets here, so the notice is sent once.
    await status_changed(svc.events, request_id, completed.status)
    await svc.tasks.request_finished(request_id)
    return True


async def fail_request(svc: Services, request_id: str, reason: str) -> bool:
    failed = await svc.requests.fail(request_id, reason)
    if failed is None:
        return False
    await finished(svc, failed)
    log_event(logger, "request.failed", logging.WARNING, request_id=request_id, reason=reason)
    metrics.REQUESTS.labels("failed").inc()
    await record(svc, request_id, "request.failed", reason=reason)
    # The same notice as completion: its task reads the final status and publishes the event
    # that matches it. Only the caller that won ``fail`` gets here, so it is sent once.
    await status_changed(svc.events, request_id, failed.status)
    await svc.tasks.request_finished(request_id)
    return True
