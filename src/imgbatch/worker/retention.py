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

Outputs are content-addressed and may be shared with other requests of the same owner
(``models.media``), so expiry never deletes them directly: it releases the request's hold on
each, and only an object no one holds any more is deleted. Every step can be repeated, so a
sweep that dies half-way is finished by the next one.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from imgbatch.core.logs import log_event
from imgbatch.domain.audit import record
from imgbatch.domain.results import results_folder
from imgbatch.domain.runtime import Runtime
from imgbatch.models.requests import RequestStatus, now
from imgbatch.storage import folder_of

logger = logging.getLogger(__name__)

TOMBSTONE_TTL = timedelta(days=30)
_FINAL = frozenset(
    {RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.EXPIRED}
)
_BATCH = 1000


async def expire_requests(rt: Runtime) -> int:
    expired = 0
    for request in await rt.requests.due_for_expiry():
        # Files first: if we die here the request is still due and the next sweep finishes it.
        await rt.store.delete_prefix(f"{request.id}/")  # the layout before content addressing
        await rt.store.delete_prefix(results_folder(request.id))
        deleted = await release_media(rt, request.id)
        if request.temp_key:
            await rt.store.delete_prefix(folder_of(request.temp_key))
            await rt.temp_objects.remove(request.temp_key)
        products = await rt.products.delete_for_request(request.id)
        await rt.chunks.discard(request.id)
        await rt.requests.mark_expired(request.id, purge_at=now() + TOMBSTONE_TTL)
        log_event(
            logger,
            "request.expired",
            request_id=request.id,
            products=products,
            media_deleted=deleted,
        )
        await record(
            rt, request.id, "request.expired", products_deleted=products, media_deleted=deleted
        )
        expired += 1
    await sweep_temp_originals(rt)
    return expired


async def release_media(rt: Runtime, request_id: str) -> int:
    """Drop the request's hold on every media object; delete those no one holds any more.

    First through the products' records (still there on a re-run after a crash, which is what
    makes a half-done release finish), then whatever the request still holds: renders whose
    product never reached a final state.
    """
    deleted = 0
    async for product in rt.products.iterate(request_id):
        for media_id in dict.fromkeys(image.media_id for image in product.images if image):
            deleted += await _release(rt, media_id, request_id)
    # In batches: each release removes the id from what held_by finds.
    while leftovers := await rt.media.held_by(request_id, limit=_BATCH):
        for media_id in leftovers:
            deleted += await _release(rt, media_id, request_id)
    return deleted


async def _release(rt: Runtime, media_id: str, request_id: str) -> int:
    token = await rt.media.release(media_id, request_id)
    if token is None:
        return 0  # still held by another request (or already gone)
    await rt.store.delete_prefix(f"{media_id}/")
    await rt.media.forget(media_id, token)
    log_event(logger, "media.deleted", media_id=media_id)
    return 1


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
