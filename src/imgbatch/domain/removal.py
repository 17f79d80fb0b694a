"""Removing what a request left behind: its outputs (through the media store, whichever backend
it is), its temporary original, its products and its staged rows. Expiry (worker.retention)
and deletion (domain.deletion) both go through here.

Outputs are content-addressed and may be shared with other requests of the same owner
(``models.media``), so they are never deleted directly: the request's hold on each is released,
and only an object no one holds any more is deleted. Every step can be repeated, so a removal
that dies half-way is finished by the next one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.models.requests import RequestRecord
from imgbatch.storage import folder_of

logger = logging.getLogger(__name__)

_BATCH = 1000


@dataclass(frozen=True)
class Removed:
    products: int
    media_deleted: int


async def remove_request_data(svc: Services, request: RequestRecord) -> Removed:
    """Everything of the request but its own document; the caller decides what becomes of it."""
    # Files first: if we die here the request still lists them, and the next run finishes it.
    await svc.store.delete_prefix(f"{request.id}/")  # the layout before content addressing
    deleted = await release_media(svc, request.id)
    if request.temp_key:
        await svc.store.delete_prefix(folder_of(request.temp_key))
        await svc.temp_objects.remove(request.temp_key)
    products = await svc.products.delete_for_request(request.id)
    await svc.chunks.discard(request.id)
    return Removed(products=products, media_deleted=deleted)


async def release_media(svc: Services, request_id: str) -> int:
    """Drop the request's hold on every media object; delete those no one holds any more.

    First through the products' records (still there on a re-run after a crash, which is what
    makes a half-done release finish), then whatever the request still holds: renders whose
    product never reached a final state.
    """
    deleted = 0
    async for product in svc.products.iterate(request_id):
        for media_id in dict.fromkeys(image.media_id for image in product.images if image):
            deleted += await _release(svc, media_id, request_id)
    # In batches: each release removes the id from what held_by finds.
    while leftovers := await svc.media.held_by(request_id, limit=_BATCH):
        for media_id in leftovers:
            deleted += await _release(svc, media_id, request_id)
    return deleted


async def _release(svc: Services, media_id: str, request_id: str) -> int:
    token = await svc.media.release(media_id, request_id)
    if token is None:
        return 0  # still held by another request (or already gone)
    await svc.store.delete_prefix(f"{media_id}/")
    await svc.media.forget(media_id, token)
    log_event(logger, "media.deleted", media_id=media_id)
    return 1
