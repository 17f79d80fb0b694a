"""Publishing a webhook event: stored once, one delivery per target, the due ones queued.

Every publisher goes through :func:`publish_event`: the webhook worker (a request finished), an
image worker (an image failed) and the API (a request was deleted). The event is keyed by its
``dedupe_key`` and each delivery by (event, target), so a publisher that runs twice finds what
the first run stored and at most queues deliveries that are still due.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.domain.webhook_queue import enqueue
from imgbatch.models.requests import now
from imgbatch.models.webhooks import (
    REQUEST_TARGET,
    DeliveryRecord,
    EventRecord,
    EventType,
    WebhookDeliveryRepository,
    WebhookEventRepository,
    WebhookSubscriberRepository,
    new_id,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestTarget:
    """A request's own ``webhook_url``. ``secret`` only when the request will not be there to
    sign with at delivery time (it is being deleted); otherwise each attempt reads it."""

    url: str
    secret: str | None = None


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def envelope(event_type: EventType, at: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type.value, "timestamp": iso(at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


async def publish_event(
    svc: Services,
    *,
    event_type: EventType,
    owner: str,
    request_id: str,
    dedupe_key: str,
    data: dict[str, Any],
    request_target: RequestTarget | None,
) -> EventRecord:
    """Store the event, create a delivery for the request's own URL (if given) and for every
    subscriber of the owner's that asked for this type, and queue the due ones."""
    created = now()
    days = svc.settings.webhook_log_ttl_days
    expires_at = created + timedelta(days=days) if days else None
    event = await WebhookEventRepository(svc.db).create_once(
        EventRecord(
            id=new_id("msg"),
            type=event_type,
            owner=owner,
            request_id=request_id,
            dedupe_key=dedupe_key,
            body=envelope(event_type, created, data),
            created_at=created,
            expires_at=expires_at,
        )
    )
    targets: list[tuple[str, str | None, str, str | None]] = []
    if request_target is not None:
        targets.append((REQUEST_TARGET, None, request_target.url, request_target.secret))
    subscribers = await WebhookSubscriberRepository(svc.db).subscribed(owner, event_type)
    targets.extend((s.id, s.id, s.url, None) for s in subscribers)
    schedule = svc.settings.webhook_retry_schedule
    first_attempt = event.created_at + timedelta(seconds=schedule[0])
    deliveries = WebhookDeliveryRepository(svc.db)
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
                secret=secret,
                max_attempts=len(schedule),
                next_attempt_at=first_attempt,
                created_at=created,
                updated_at=created,
                expires_at=event.expires_at,
            )
            for target, subscriber_id, url, secret in targets
        ]
    )
    queued = await enqueue(
        svc, [(d, event.owner) for d in await deliveries.ids_for_event(event.id)]
    )
    log_event(
        logger,
        "webhook.event_published",
        event_id=event.id,
        type=event.type,
        request_id=request_id,
        targets=len(targets),
        queued=queued,
    )
    return event
