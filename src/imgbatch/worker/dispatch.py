"""Dispatch: expand a request's staged rows into products, then fan out one task per product."""

from __future__ import annotations

import logging

from imgbatch.core.logs import log_event
from imgbatch.domain.audit import record
from imgbatch.domain.completion import complete_if_finished, fail_request
from imgbatch.domain.events import status_changed
from imgbatch.domain.runtime import Runtime
from imgbatch.models.products import ProductRecord
from imgbatch.models.requests import RequestStatus

logger = logging.getLogger(__name__)


async def dispatch_request(rt: Runtime, request_id: str) -> None:
    request = await rt.requests.get(request_id)
    if request is None or request.status not in (RequestStatus.PENDING, RequestStatus.IN_PROGRESS):
        return
    if not request.ingested:
        inserted = chunks = 0
        async for rows in rt.chunks.chunks(request_id):
            chunks += 1
            inserted += await rt.products.insert_many(ProductRecord.model_validate(r) for r in rows)
        if chunks == 0:
            # Chunks are only deleted after the request is marked ingested, so they were lost
            # (or never written): there is nothing to process, ever. Say so instead of hanging.
            await fail_request(rt, request_id, "the uploaded rows are missing; upload again")
            return
        # Mark first, then drop the chunks: a crash in between leaves chunks that a re-run
        # only deletes, never products that exist twice.
        await rt.requests.mark_ingested(request_id)
        await rt.chunks.discard(request_id)
        log_event(logger, "request.ingested", request_id=request_id, products=inserted)
    if await rt.requests.start(request_id):
        await status_changed(rt.events, request_id, RequestStatus.IN_PROGRESS)
    serials = [s async for s in rt.products.claimable_serials(request_id)]
    sent = await rt.tasks.products(
        request_id, serials, request.priority, per_task=rt.settings.products_per_task
    )
    await rt.requests.mark_dispatched(request_id)
    log_event(logger, "request.dispatched", request_id=request_id, products=sent)
    await record(rt, request_id, "request.dispatched", products=sent)
    if sent == 0:
        # Every product was already final (a re-dispatch after a crash): finish the request here.
        await complete_if_finished(rt, request_id)
