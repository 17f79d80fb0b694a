"""Events: what a finished request tells its subscribers, stored once and fanned out
(domain.webhook_events).

``publish_request_event`` runs in the ``request_finished`` notice task, which the one caller that
wins a request's terminal transition sends. The task may still run twice (late acknowledgement),
so the event is keyed by (type, request) and each delivery by (event, target): a second run
finds what the first stored and at most re-queues deliveries that are still due.
"""

from __future__ import annotations

import logging
from typing import Any

from imgbatch.core.logs import log_event
from imgbatch.core.settings import Settings
from imgbatch.domain.images import single_image_data
from imgbatch.domain.services import Services
from imgbatch.domain.urls import download_url, results_url, status_url
from imgbatch.domain.webhook_events import RequestTarget, publish_event
from imgbatch.domain.webhook_events import iso as _iso
from imgbatch.models.requests import RequestRecord, RequestRepository, RequestStatus
from imgbatch.models.webhooks import EventRecord, EventType

logger = logging.getLogger(__name__)

_TERMINAL_EVENTS = {
    RequestStatus.COMPLETED: EventType.REQUEST_COMPLETED,
    RequestStatus.FAILED: EventType.REQUEST_FAILED,
}


def request_data(settings: Settings, request: RequestRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": request.id,
        "status": request.status.value,
        "products_total": request.products_total,
        "images_total": request.images_total,
        "images_done": request.images_done,
        "images_failed": request.images_failed,
        "status_url": status_url(settings, request.id),
        # The result CSV only exists for completed requests (anything else answers 409).
        "download_url": (
            download_url(settings, request.id)
            if request.status == RequestStatus.COMPLETED
            else None
        ),
        # Every image record of the request, as JSON Lines.
        "results_url": results_url(settings, request.id),
        "created_at": _iso(request.created_at),
        "completed_at": _iso(request.completed_at),
    }
    if request.status == RequestStatus.FAILED:
        data["reason"] = request.failure_reason
    return data


async def publish_request_event(rt: Services, request_id: str) -> EventRecord | None:
    """Store the request's terminal event, create its deliveries and queue the due ones."""
    request = await RequestRepository(rt.db).get(request_id)
    event_type = _TERMINAL_EVENTS.get(request.status) if request is not None else None
    if request is None or event_type is None:
        log_event(logger, "webhook.event_skipped", request_id=request_id)
        return None
    data = request_data(rt.settings, request)
    image = await single_image_data(rt, request)
    if image is not None:  # a single-image job carries its one record inline
        data["image"] = image
    event = await publish_event(
        rt,
        event_type=event_type,
        owner=request.owner,
        request_id=request.id,
        # One event per completion: a retried request that completes again is a new event.
        dedupe_key=f"{event_type}:{request.id}:{request.completions}",
        data=data,
        request_target=RequestTarget(request.webhook_url) if request.webhook_url else None,
    )
    await RequestRepository(rt.db).clear_notice(request.id, request.completions)
    return event
