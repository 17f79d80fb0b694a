"""Webhook subscribers and their delivery log: ``/api/webhooks``.

A subscriber belongs to the caller's owner; anyone else's is reported as not found. Its secret
is shown when it is created and when it is rotated, and never listed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import DeliveriesDep, ServicesDep, SettingsDep, SubscribersDep, TasksDep
from imgbatch.api.openapi import WITH_BODY, errors
from imgbatch.api.paging import Offset
from imgbatch.api.schemas import WebhookAttemptView, attempt_views
from imgbatch.core.errors import Conflict, NotFound, UnprocessableEntity
from imgbatch.core.logs import log_event, redact_url
from imgbatch.domain.subscribers import register, unregister
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.domain.webhook_targets import validate_webhook_url
from imgbatch.models.requests import now
from imgbatch.models.webhooks import (
    QUEUE_HOLD,
    DeliveryRecord,
    EventType,
    SubscriberRecord,
    WebhookSubscriberRepository,
    new_id,
)

router = APIRouter(tags=["webhooks"])
logger = logging.getLogger(__name__)

# As a sheet's URLs (IMGBATCH_MAX_URL_LENGTH's default): no receiver needs a longer one.
MAX_URL_LENGTH = 2048


class SubscriberCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/imgbatch",
                    "events": ["request.completed", "request.failed"],
                    "description": "the shop's image pipeline",
                }
            ]
        }
    )

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    # Each event type once is all there is to say; a longer list is a hostile one.
    events: list[EventType] = Field(min_length=1, max_length=len(EventType))
    description: str | None = Field(default=None, max_length=500)


class SubscriberView(BaseModel):
    id: str
    url: str
    events: list[EventType]
    description: str | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None


class SubscriberCreated(SubscriberView):
    secret: str


class SecretRotated(BaseModel):
    id: str
    secret: str
    previous_secret_expires_at: datetime


class DeliveryView(BaseModel):
    id: str
    event_id: str
    event_type: EventType
    request_id: str
    subscriber_id: str | None
    url: str
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[WebhookAttemptView]


def _subscriber_view(record: SubscriberRecord) -> SubscriberView:
    return SubscriberView.model_validate(record.model_dump())


def _delivery_view(delivery: DeliveryRecord) -> DeliveryView:
    return DeliveryView.model_validate(
        {**delivery.model_dump(exclude={"log"}), "log": attempt_views(delivery)}
    )


async def _owned(
    subscribers: WebhookSubscriberRepository, subscriber_id: str, owner: str
) -> SubscriberRecord:
    record = await subscribers.get(subscriber_id, owner=owner)
    if record is None:
        raise NotFound(f"webhook subscriber {subscriber_id} not found")
    return record


@router.post(
    "/api/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriberCreated,
    responses=errors(*WITH_BODY, Unauthorized, Conflict, UnprocessableEntity),
)
async def create_subscriber(
    body: SubscriberCreate, owner: OwnerDep, settings: SettingsDep, services: ServicesDep
) -> SubscriberCreated:
    url = validate_webhook_url(body.url, settings)
    created = now()
    record = SubscriberRecord(
        id=new_id("wh"),
        owner=owner,
        url=url,
        events=list(dict.fromkeys(body.events)),
        description=body.description,
        secret=new_secret(),
        created_at=created,
        updated_at=created,
    )
    await register(services, record)
    log_event(
        logger,
        "webhook.subscriber_created",
        subscriber_id=record.id,
        owner=owner,
        url=redact_url(url),
        events=",".join(record.events),
    )
    return SubscriberCreated(**_subscriber_view(record).model_dump(), secret=record.secret)


@router.get("/api/webhooks", response_model=list[SubscriberView], responses=errors(Unauthorized))
async def list_subscribers(owner: OwnerDep, subscribers: SubscribersDep) -> list[SubscriberView]:
    return [_subscriber_view(record) for record in await subscribers.for_owner(owner)]


@router.get(
    "/api/webhooks/{subscriber_id}",
    response_model=SubscriberView,
    responses=errors(Unauthorized, NotFound),
)
async def get_subscriber(
    subscriber_id: str, owner: OwnerDep, subscribers: SubscribersDep
) -> SubscriberView:
    return _subscriber_view(await _owned(subscribers, subscriber_id, owner))


@router.delete(
    "/api/webhooks/{subscriber_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(Unauthorized, NotFound),
)
async def delete_subscriber(subscriber_id: str, owner: OwnerDep, services: ServicesDep) -> Response:
    if not await unregister(services, subscriber_id, owner=owner):
        raise NotFound(f"webhook subscriber {subscriber_id} not found")
    log_event(logger, "webhook.subscriber_deleted", subscriber_id=subscriber_id, owner=owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/api/webhooks/{subscriber_id}/rotate-secret",
    response_model=SecretRotated,
    responses=errors(Unauthorized, NotFound, Conflict),
)
async def rotate_secret(
    subscriber_id: str, owner: OwnerDep, settings: SettingsDep, subscribers: SubscribersDep
) -> SecretRotated:
    await _owned(subscribers, subscriber_id, owner)
    rotated = await subscribers.rotate_secret(
        subscriber_id,
        owner=owner,
        secret=new_secret(),
        overlap=timedelta(seconds=settings.webhook_secret_overlap_seconds),
    )
    if rotated is None or rotated.previous_secret_expires_at is None:
        raise Conflict("the secret was rotated concurrently; try again")
    log_event(logger, "webhook.secret_rotated", subscriber_id=subscriber_id, owner=owner)
    return SecretRotated(
        id=rotated.id,
        secret=rotated.secret,
        previous_secret_expires_at=rotated.previous_secret_expires_at,
    )


@router.get(
    "/api/webhooks/{subscriber_id}/deliveries",
    response_model=list[DeliveryView],
    responses=errors(Unauthorized, NotFound, UnprocessableEntity),
)
async def list_deliveries(
    subscriber_id: str,
    owner: OwnerDep,
    subscribers: SubscribersDep,
    deliveries: DeliveriesDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryView]:
    await _owned(subscribers, subscriber_id, owner)
    page = await deliveries.for_subscriber(subscriber_id, offset=offset, limit=limit)
    return [_delivery_view(d) for d in page]


@router.post(
    "/api/webhooks/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryView,
    responses=errors(Unauthorized, NotFound, Conflict),
)
async def redeliver(
    delivery_id: str,
    owner: OwnerDep,
    subscribers: SubscribersDep,
    deliveries: DeliveriesDep,
    tasks: TasksDep,
) -> DeliveryView:
    """Send the event once more, now, with the same ``webhook-id`` (receivers dedupe on it)."""
    current = await deliveries.get(delivery_id, owner=owner)
    if current is None:
        raise NotFound(f"webhook delivery {delivery_id} not found")
    if current.subscriber_id is not None:
        subscriber = await subscribers.get(current.subscriber_id, owner=owner)
        if subscriber is None:
            raise Conflict("the subscriber of this delivery was deleted")
        if subscriber.disabled_at is not None:
            raise Conflict(f"the subscriber is disabled: {subscriber.disabled_reason}")
    rearmed = await deliveries.rearm(delivery_id, owner=owner)
    if rearmed is None:
        raise NotFound(f"webhook delivery {delivery_id} not found")
    log_event(logger, "webhook.redelivery_requested", delivery_id=delivery_id, owner=owner)
    if await deliveries.mark_queued(delivery_id, hold=QUEUE_HOLD):
        try:
            await tasks.webhook_deliveries([delivery_id])
        except Exception as exc:  # the broker is down: the poller sends it once the hold ends
            log_event(
                logger,
                "webhook.redelivery_deferred",
                logging.WARNING,
                delivery_id=delivery_id,
                error=type(exc).__name__,
            )
    return _delivery_view(rearmed)
