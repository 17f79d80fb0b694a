"""Events: what a finished request tells its subscribers, stored once and fanned out.

``publish_request_event`` runs in the ``request_finished`` notice task, which the one caller that
wins a request's terminal transition sends. The task may still run twice (late acknowledgement),
so the event is keyed by (type, request) and each delivery by (event, target): a second run
finds what the first stored and at most re-queues deliveries that are still due.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from imgbatch.core.logs import log_event
from imgbatch.core.settings import Settings
from imgbatch.domain.images import single_image_data
from imgbatch.domain.metadata import metadata_object
from imgbatch.domain.services import Services
from imgbatch.domain.urls import download_url, results_url, status_url
from imgbatch.models.requests import RequestRecord, RequestStatus, now
from imgbatch.models.webhooks import (
    REQUEST_TARGET,
    DeliveryRecord,
    EventRecord,
    EventType,
    new_id,
)
from imgbatch.webhooks.scheduling import enqueue

logger = logging.getLogger(__name__)

_TERMINAL_EVENTS = {
    RequestStatus.COMPLETED: EventType.REQUEST_COMPLETED,
    RequestStatus.FAILED: EventType.REQUEST_FAILED,
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


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


def envelope(
    event_type: EventType, at: datetime, data: dict[str, Any], *, request: RequestRecord
) -> str:
    """The body of every event about ``request``: each carries the caller's metadata, if the
    upload had any, so a receiver can match any event type, present or future, to its own
    records. Without metadata the body is exactly what it was before metadata existed."""
    metadata = metadata_object(request.metadata_json)
    if metadata is not None:
        data = {**data, "metadata": metadata}
    return json.dumps(
        {"type": event_type.value, "timestamp": _iso(at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


async def publish_request_event(rt: Services, request_id: str) -> EventRecord | None:
    """Store the request's terminal event, create its deliveries and queue the due ones."""
    request = await rt.requests.get(request_id)
    event_type = _TERMINAL_EVENTS.get(request.status) if request is not None else None
    if request is None or event_type is None:
        log_event(logger, "webhook.event_skipped", request_id=request_id)
        return None
    created = now()
    data = request_data(rt.settings, request)
    image = await single_image_data(rt, request)
    if image is not None:  # a single-image job carries its one record inline
        data["image"] = image
    days = rt.settings.webhook_log_ttl_days
    expires_at = created + timedelta(days=days) if days else None
    event = await rt.webhook_events.create_once(
        EventRecord(
            id=new_id("msg"),
            type=event_type,
            owner=request.owner,
            request_id=request.id,
            # One event per completion: a retried request that completes again is a new event.
            dedupe_key=f"{event_type}:{request.id}:{request.completions}",
            body=envelope(event_type, created, data, request=request),
            created_at=created,
            expires_at=expires_at,
        )
    )
    targets: list[tuple[str, str | None, str]] = []
    if request.webhook_url:
        targets.append((REQUEST_TARGET, None, request.webhook_url))
    subscribers = await rt.subscribers.subscribed(request.owner, event_type)
    targets.extend((s.id, s.id, s.url) for s in subscribers)
    schedule = rt.settings.webhook_retry_schedule
    first_attempt = event.created_at + timedelta(seconds=schedule[0])
    deliveries = rt.deliveries
    await deliveries.create_many(
        [
            DeliveryRecord(
                id=new_id("dlv"),
                event_id=event.id,
                event_type=event.type,
                owner=event.owner,
                request_id=event.request_id,
                target=target,
                subscriber_id=subscriber_id,
                url=url,
                max_attempts=len(schedule),
                next_attempt_at=first_attempt,
                created_at=created,
                updated_at=created,
                expires_at=event.expires_at,
            )
            for target, subscriber_id, url in targets
        ]
    )
    queued = await enqueue(rt, [(d, event.owner) for d in await deliveries.ids_for_event(event.id)])
    log_event(
        logger,
        "webhook.event_published",
        event_id=event.id,
        type=event.type,
        request_id=request.id,
        targets=len(targets),
        queued=queued,
    )
    await rt.requests.clear_notice(request.id, request.completions)
    return event
