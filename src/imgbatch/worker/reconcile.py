"""The reconciler: MongoDB is the source of truth, so anything the queue lost is found here.

A request that has not moved for a while is re-examined: if it was never dispatched it is
dispatched again; otherwise the counts its dead runs left unfinished are completed
(domain.recount) and its unfinished products are enqueued again. Tasks are idempotent, so a
duplicate is harmless.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from imgbatch.core import metrics
from imgbatch.core.logs import log_event
from imgbatch.domain import inflight, subscribers
from imgbatch.domain.audit import record
from imgbatch.domain.completion import complete_if_finished
from imgbatch.domain.recount import recount
from imgbatch.domain.runtime import Runtime
from imgbatch.models.requests import RequestRecord

logger = logging.getLogger(__name__)


async def reconcile(rt: Runtime) -> int:
    idle_for = timedelta(seconds=rt.settings.request_idle_seconds)
    stale = await rt.requests.stale_unfinished(idle_for=idle_for)
    for request in stale:
        await _reconcile_request(rt, request)
    await _sweep_abandoned_uploads(rt)
    await inflight.repair(rt)
    await subscribers.repair(rt)
    for request_id in await rt.requests.unnotified(idle_for=idle_for):
        # The finish happened but its notice never turned into an event: send it again (the
        # event is stored once per completion, so a duplicate notice changes nothing).
        log_event(logger, "request.notice_resent", request_id=request_id)
        metrics.RECONCILER_REPAIRS.labels("notice_resent").inc()
        await record(rt, request_id, "reconciler.notice_resent")
        await rt.requests.touch(request_id)
        await rt.tasks.request_finished(request_id)
    return len(stale)


async def _sweep_abandoned_uploads(rt: Runtime) -> None:
    """Drop rows staged by uploads that never wrote their request (the API died mid-upload)."""
    older_than = timedelta(seconds=rt.settings.staging_ttl_seconds)
    for request_id in await rt.chunks.stale_request_ids(older_than=older_than):
        if await rt.requests.get(request_id) is None:
            await rt.chunks.discard(request_id)
            log_event(logger, "upload.abandoned_swept", request_id=request_id)
            metrics.RECONCILER_REPAIRS.labels("upload_swept").inc()


async def _reconcile_request(rt: Runtime, request: RequestRecord) -> None:
    await rt.requests.touch(request.id)  # one repair per lease, even if the reconciler runs often
    if not request.ingested or request.dispatched_at is None:
        log_event(logger, "request.redispatched", request_id=request.id)
        metrics.RECONCILER_REPAIRS.labels("redispatched").inc()
        await record(rt, request.id, "reconciler.redispatched")
        await rt.tasks.dispatch(request.id)
        return
    recounted = await recount(rt, request.id)
    if await complete_if_finished(rt, request.id):
        return
    serials = [s async for s in rt.products.claimable_serials(request.id)]
    sent = await rt.tasks.products(
        request.id, serials, request.priority, per_task=rt.settings.products_per_task
    )
    log_event(
        logger, "request.reconciled", request_id=request.id, requeued=sent, recounted=recounted
    )
    metrics.RECONCILER_REPAIRS.labels("requeued").inc()
    await record(rt, request.id, "reconciler.requeued", requeued=sent, recounted=recounted)
