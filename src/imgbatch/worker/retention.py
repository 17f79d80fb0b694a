"""Retention: requests past ``IMGBATCH_RESULT_TTL_DAYS`` lose their products and release their
outputs; originals of single-image jobs are swept ``IMGBATCH_TEMP_TTL_HOURS`` after the job is
final.

Only finished requests expire (completed, failed, cancelled); one still pending or in progress
is left alone until it finishes, and then kept at least a day (domain.completion). The API
answers 410 Gone from ``expires_at`` on, before this sweeper gets to it, and products have no
TTL index of their own, so a request is never seen without its products. The request stays as
a tombstone for a while (a TTL index removes it), so its owner gets 410 rather than a 404 that
would look like a mistyped id. Stored outputs (files, or objects in a bucket) have no TTL of
ours, so this sweeper is what removes them, through the media store whichever backend it is.

Outputs are content-addressed and may be shared with other requests of the same owner, so
expiry never deletes them directly: domain.removal (which deleting a request uses too) releases
the request's hold on each, and only an object no one holds any more is deleted.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from imgbatch.core.logs import log_event
from imgbatch.domain.audit import record
from imgbatch.domain.removal import remove_request_data
from imgbatch.domain.runtime import Runtime
from imgbatch.models.requests import RequestStatus, now
from imgbatch.storage import folder_of

logger = logging.getLogger(__name__)

TOMBSTONE_TTL = timedelta(days=30)
_FINAL = frozenset(
    {RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.EXPIRED}
)


async def expire_requests(rt: Runtime) -> int:
    expired = 0
    for request in await rt.requests.due_for_expiry():
        removed = await remove_request_data(rt, request)
        await rt.requests.mark_expired(request.id, purge_at=now() + TOMBSTONE_TTL)
        log_event(
            logger,
            "request.expired",
            request_id=request.id,
            products=removed.products,
            media_deleted=removed.media_deleted,
        )
        await record(
            rt,
            request.id,
            "request.expired",
            products_deleted=removed.products,
            media_deleted=removed.media_deleted,
        )
        expired += 1
    await sweep_temp_originals(rt)
    return expired


async def sweep_temp_originals(rt: Runtime) -> int:
    """Delete originals of single-image jobs final for longer than ``IMGBATCH_TEMP_TTL_HOURS``.

    A retry before then reads the original again; after, it fails with a message saying so.
    """
    keep = timedelta(hours=rt.settings.temp_ttl_hours)
    swept = 0
    for temp in await rt.temp_objects.due():
        request = await rt.requests.get(temp.request_id)
        if request is not None:
            if request.status not in _FINAL:
                await rt.temp_objects.postpone(temp.key, now() + keep)
                continue
            finished_at = request.completed_at or request.updated_at
            if now() - finished_at < keep:
                await rt.temp_objects.postpone(temp.key, finished_at + keep)
                continue
        await rt.store.delete_prefix(folder_of(temp.key))
        await rt.temp_objects.remove(temp.key)
        log_event(logger, "temp.swept", request_id=temp.request_id)
        swept += 1
    return swept
