"""Retention: requests past ``IMGBATCH_RESULT_TTL_DAYS`` lose their products and outputs.

Only finished requests expire (completed, failed, cancelled); one still pending or in progress
is left alone until it finishes, and then kept at least a day (domain.completion). The API
answers 410 Gone from ``expires_at`` on, before this sweeper gets to it, and products have no
TTL index of their own, so a request is never seen without its products. The request stays as
a tombstone for a while (a TTL index removes it), so its owner gets 410 rather than a 404 that
would look like a mistyped id. Stored outputs (files, or objects in a bucket) have no TTL of
ours, so this sweeper is what removes them, through the media store whichever backend it is.

Originals are never stored: a download lives in memory for the length of one product task,
and a retry downloads again, so there is no temporary area to expire.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from core.logs import log_event
from domain.audit import record
from domain.runtime import Runtime
from models.requests import now

logger = logging.getLogger(__name__)

TOMBSTONE_TTL = timedelta(days=30)


async def expire_requests(rt: Runtime) -> int:
    expired = 0
    for request in await rt.requests.due_for_expiry():
        # Files first: if we die here the request is still due and the next sweep finishes it.
        await rt.store.delete_prefix(f"{request.id}/")
        products = await rt.products.delete_for_request(request.id)
        await rt.chunks.discard(request.id)
        await rt.requests.mark_expired(request.id, purge_at=now() + TOMBSTONE_TTL)
        log_event(logger, "request.expired", request_id=request.id, products=products)
        await record(rt, request.id, "request.expired", products_deleted=products)
        expired += 1
    return expired
