"""Deleting a request at its owner's word: ``DELETE /api/requests/{id}``.

A running request is cancelled first, so no new product of it starts. Then its
``request.deleted`` event is published while the request is still there to describe it (its
webhook URL and secret are copied onto that one delivery, since the request will not be there
to sign with), and then everything it left goes the way expiry removes it (domain.removal):
outputs no other request of the owner holds are deleted from the store, local disk or S3. The
request's own document goes last, so a delete that dies half-way leaves a request its owner
can see and delete again; the event is keyed by the request, so that sends it once.

A product a worker was rendering at the moment of the cancel may still finish after the
request is gone; its writes find no request to count into.
"""

from __future__ import annotations

import logging

from imgbatch.core.errors import Conflict, NotFound
from imgbatch.core.logs import log_event
from imgbatch.domain.controls import cancel
from imgbatch.domain.events import status_changed
from imgbatch.domain.removal import remove_request_data
from imgbatch.domain.services import Services
from imgbatch.domain.urls import status_url
from imgbatch.domain.webhook_events import RequestTarget, iso, publish_event
from imgbatch.models.requests import UNFINISHED_REQUEST, RequestRecord, now
from imgbatch.models.webhooks import EventType

logger = logging.getLogger(__name__)

DELETED = "deleted"


async def delete_request(svc: Services, request_id: str, *, owner: str) -> None:
    """Delete one of ``owner``'s requests; 404 if it has none by that id (or it is gone)."""
    record = await svc.requests.get(request_id, owner=owner)
    if record is None:
        raise NotFound(f"request {request_id} not found")
    if record.status in UNFINISHED_REQUEST:
        try:
            record = await cancel(svc, record)
        except Conflict:
            # It finished meanwhile: fine, it is deleted as it stands.
            record = await svc.requests.get(request_id, owner=owner) or record
    await _announce(svc, record)
    removed = await remove_request_data(svc, record)
    if not await svc.requests.delete(request_id, owner=owner):
        raise NotFound(f"request {request_id} not found")  # a concurrent delete won
    log_event(
        logger,
        "request.deleted",
        request_id=request_id,
        owner=owner,
        products=removed.products,
        media_deleted=removed.media_deleted,
    )
    # Every API process drops its cached status answer; event streams see the request gone.
    await status_changed(svc.events, request_id, DELETED)


async def _announce(svc: Services, record: RequestRecord) -> None:
    target = None
    if record.webhook_url and record.webhook_secret:
        target = RequestTarget(record.webhook_url, secret=record.webhook_secret)
    await publish_event(
        svc,
        event_type=EventType.REQUEST_DELETED,
        owner=record.owner,
        request_id=record.id,
        dedupe_key=f"{EventType.REQUEST_DELETED}:{record.id}",
        data={
            "request_id": record.id,
            "status": DELETED,
            # What it was when it was deleted (a running request: cancelled).
            "previous_status": record.status.value,
            "file_name": record.file_name,
            "products_total": record.products_total,
            "images_total": record.images_total,
            "images_done": record.images_done,
            "images_failed": record.images_failed,
            "status_url": status_url(svc.settings, record.id),
            "created_at": iso(record.created_at),
            "deleted_at": iso(now()),
        },
        request_target=target,
    )
