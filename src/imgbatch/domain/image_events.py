"""``image.failed``: an image that failed for good (after its download retries), as a webhook.

Sent to the request's own ``webhook_url`` for every single-image job, and for a sheet whose
upload asked for it (``webhook_events=image.failed``); and to every subscriber of the owner's
registered for ``image.failed``, whatever the request. Nothing is stored when no one asked.

Published by the run that won the product's final write, once per image and completion (a
retry that fails the image again is a new event). A run that dies between that write and this
publish loses the event; delivery itself is at least once, like every other event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pymongo.errors import PyMongoError

from imgbatch.core.errors import UnprocessableEntity
from imgbatch.core.logs import log_event, redact_url
from imgbatch.domain.services import Services
from imgbatch.domain.urls import status_url
from imgbatch.domain.webhook_events import RequestTarget, publish_event
from imgbatch.models.products import ImageError, ProductRecord
from imgbatch.models.requests import RequestKind, RequestRecord
from imgbatch.models.webhooks import EventType, WebhookSubscriberRepository

logger = logging.getLogger(__name__)

# What a sheet's upload may ask its webhook_url to be sent besides request.completed/failed.
PER_IMAGE_EVENTS = (EventType.IMAGE_FAILED.value,)


def requested_events(events: Sequence[str] | None, webhook_url: str | None) -> list[str]:
    """The upload's ``webhook_events``, checked: 422 for an unknown one, or with no URL."""
    # A form may send one field with commas or the field repeated: both are accepted.
    asked = [e.strip() for value in events or () for e in value.split(",") if e.strip()]
    unknown = [e for e in asked if e not in PER_IMAGE_EVENTS]
    if unknown:
        raise UnprocessableEntity(
            {
                "message": f"unknown webhook_events {unknown}",
                "valid_webhook_events": list(PER_IMAGE_EVENTS),
            }
        )
    if asked and not webhook_url:
        raise UnprocessableEntity({"message": "webhook_events needs a webhook_url to send to"})
    return list(dict.fromkeys(asked))


def wants_image_events(request: RequestRecord) -> bool:
    """Whether the request's own webhook_url gets ``image.failed``."""
    if not request.webhook_url:
        return False
    return request.kind == RequestKind.IMAGE or EventType.IMAGE_FAILED in request.webhook_events


async def announce_failed_images(
    svc: Services, request: RequestRecord, product: ProductRecord, errors: Sequence[ImageError]
) -> None:
    target = RequestTarget(request.webhook_url) if request.webhook_url else None
    if not wants_image_events(request):
        target = None
    try:
        subscribed = await WebhookSubscriberRepository(svc.db).subscribed(
            request.owner, EventType.IMAGE_FAILED
        )
        if target is None and not subscribed:
            return
        for error in errors:
            await publish_event(
                svc,
                event_type=EventType.IMAGE_FAILED,
                owner=request.owner,
                request_id=request.id,
                dedupe_key=(
                    f"{EventType.IMAGE_FAILED}:{request.id}:{request.completions}"
                    f":{product.serial_number}:{error.index}"
                ),
                data={
                    "request_id": request.id,
                    "kind": request.kind.value,
                    "serial_number": product.serial_number,
                    "product_name": product.product_name,
                    "image_index": error.index,
                    "url": error.url,
                    "error": {"code": error.code, "message": error.message},
                    "attempts": error.attempts,
                    "status_url": status_url(svc.settings, request.id),
                },
                request_target=target,
            )
    except (PyMongoError, ConnectionError) as exc:
        # The image's outcome is recorded and counted; losing its event must not undo that.
        log_event(
            logger,
            "webhook.image_failed_not_published",
            logging.WARNING,
            request_id=request.id,
            serial=product.serial_number,
            url=redact_url(errors[0].url),
            error=type(exc).__name__,
        )
