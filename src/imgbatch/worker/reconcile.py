"""The reconciler: MongoDB is the source of truth, so anything the queue lost is found here.

It runs every few seconds (``RECONCILE_INTERVAL_SECONDS``) and acts on what it can see
directly, not on minutes without progress:

- a product whose run is over (its holder died, or let its lease run out: ``worker.leases``)
  is released and sent to the queue again, alone, at once; one such a run finished but never
  counted is counted (domain.recount);
- a broker that lost its data (Redis restarted empty) is seen by a marker key gone missing
  with it: every unfinished request is then dispatched or enqueued again;
- as a last resort, a request that has not moved for ``REQUEST_IDLE_SECONDS`` is re-examined:
  if it was never dispatched it is dispatched again; otherwise the counts its dead runs left
  unfinished are completed (domain.recount) and its unfinished products are enqueued again.

Tasks are idempotent, so a duplicate message is harmless.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from imgbatch.core import metrics
from imgbatch.core.logs import log_event
from imgbatch.domain import inflight, subscribers
from imgbatch.domain.audit import record
from imgbatch.domain.completion import complete_if_finished
from imgbatch.domain.recount import recount
from imgbatch.domain.runtime import Runtime
from imgbatch.models.requests import Priority, RequestRecord
from imgbatch.worker import leases
from imgbatch.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


# Lives in the broker's Redis with the messages, so it is lost exactly when they are. Each pass
# that ran to its end leaves its start time there (when the reconciler last looked).
BROKER_MARKER = "imgbatch:broker-marker"


async def reconcile(rt: WorkerRuntime) -> int:
    started = time.time()
    await _take_back_abandoned(rt)
    broker_lost = await _broker_lost(rt)
    # After a broker loss every unfinished request is looked at, however recently it moved.
    idle_for = timedelta(0) if broker_lost else timedelta(seconds=rt.settings.request_idle_seconds)
    stale = await rt.requests.stale_unfinished(
        idle_for=idle_for, limit=1000 if broker_lost else 100
    )
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
    # Last: a pass cut short (by an outage) leaves the marker missing, and the next one redoes
    # a broker loss's repairs.
    await rt.redis.set(BROKER_MARKER, repr(started))
    return len(stale)


async def _take_back_abandoned(rt: Runtime) -> int:
    """Finish what dead runs left: their uncounted products are counted, and their unfinished
    ones are released and sent to the queue again; returns how many were sent."""
    taken = 0
    for request_id, priority in await rt.requests.in_progress():
        if await _count_what_dead_runs_finished(rt, request_id):
            continue  # that completed the request
        taken += await _requeue_held_by_dead_runs(rt, request_id, priority)
    return taken


async def _count_what_dead_runs_finished(rt: Runtime, request_id: str) -> bool:
    """A run that died between a product's final move and its count left it out of the
    request's counters; complete those counts now (domain.recount), not once the request has
    been idle for minutes. True if that completed the request."""
    unsettled = await rt.products.unsettled_counts(request_id)
    # A live run counts a product right after finishing it: one still uncounted a lease later
    # (a holder on another host) or whose holder is gone was left by a dead run.
    before = datetime.now(UTC) - timedelta(seconds=rt.settings.product_lease_seconds)
    if not any(
        leases.holder_gone(p) or (p.finished_at is not None and p.finished_at < before)
        for p in unsettled
    ):
        return False
    recounted = await recount(rt, request_id)
    log_event(logger, "request.recounted", request_id=request_id, recounted=recounted)
    return await complete_if_finished(rt, request_id)


async def _requeue_held_by_dead_runs(rt: Runtime, request_id: str, priority: Priority) -> int:
    """Release the products whose run is over and send each to the queue again, alone (if it
    is what killed its run, it takes only itself down next time); returns how many."""
    freed = []
    for product in await rt.products.processing(request_id):
        claim = product.claim
        # Once per claim: a product already sent waits in the queue for its next run.
        if claim is None or product.requeued == claim or not leases.abandoned(product):
            continue
        if await rt.products.release(request_id, product.serial_number, claim, requeued=True):
            freed.append(product.serial_number)
    if not freed:
        return 0
    # At the request's head priority: these were under way, the rest of it waits behind.
    await rt.tasks.products(request_id, freed, priority, per_task=1)
    log_event(logger, "product.lease_taken_back", request_id=request_id, serials=freed)
    metrics.RECONCILER_REPAIRS.labels("lease_taken_back").inc(len(freed))
    await record(rt, request_id, "reconciler.lease_taken_back", serials=freed)
    return len(freed)


async def _broker_lost(rt: WorkerRuntime) -> bool:
    """Whether the broker lost its messages since the last pass (its marker is gone; also true
    on the first pass against a new Redis, when there is nothing of ours in it to lose)."""
    if await rt.redis.exists(BROKER_MARKER):
        return False
    log_event(logger, "broker.lost", logging.WARNING)
    metrics.RECONCILER_REPAIRS.labels("broker_lost").inc()
    return True


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
