"""Webhooks: subscribers, the events we publish and one delivery document per (event, target).

Every write that may be repeated is either keyed by a unique index (an event per request and
type, a delivery per event and target) or conditional (claiming a delivery, queueing it), so a
redelivered task or a duplicate message never sends an event twice as a *new* event. Sending
the same event again (same ``webhook-id``) is allowed: delivery is at least once.

A delivery carries its own schedule: ``next_attempt_at`` says when it is due, ``lease_until``
guards an attempt in flight and ``queued_until`` stops the poller from enqueueing a message that
is already waiting in Redis. Nothing waits inside Celery.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from imgbatch.models.db import (
    WEBHOOK_DELIVERIES,
    WEBHOOK_EVENTS,
    WEBHOOK_SUBSCRIBERS,
    Database,
    Document,
)
from imgbatch.models.requests import now

# The per-request webhook_url is a target of its own, next to the owner's registered subscribers.
REQUEST_TARGET = "request"
# A queued delivery message not run after this long is assumed lost and sent again (claims make
# a duplicate harmless).
QUEUE_HOLD = timedelta(seconds=60)
# Before any lease or queue mark exists, "long ago" keeps the due-query a plain range match.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventType(StrEnum):
    REQUEST_COMPLETED = "request.completed"
    REQUEST_FAILED = "request.failed"
    REQUEST_DELETED = "request.deleted"
    # An image failed after its retries: a single-image job's always, a sheet's when its
    # upload asked for it (``webhook_events``) or a subscriber subscribed to it.
    IMAGE_FAILED = "image.failed"


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or in one)
    DELIVERED = "delivered"  # a 2xx arrived
    FAILED = "failed"  # out of attempts, 410, or the subscriber is gone


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class SubscriberRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    owner: str
    url: str
    events: list[EventType]
    description: str | None = None
    # Stored as-is: signing needs the key itself. It is never logged and only shown on creation
    # and rotation.
    secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, at: datetime) -> list[str]:
        """The current secret, plus the previous one while its overlap lasts."""
        keys = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > at:
            keys.append(self.previous_secret)
        return keys


class EventRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")  # the ``webhook-id`` header, the same on every attempt
    type: EventType
    owner: str
    request_id: str
    # One event per (type, request): the unique index on this is what makes it exactly one.
    dedupe_key: str
    # The exact JSON sent, serialised once so that every attempt signs and sends the same bytes.
    body: str
    created_at: datetime
    # Deleted then, with its deliveries (a TTL index); None keeps it.
    expires_at: datetime | None = None


class AttemptRecord(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0


class DeliveryRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    event_id: str
    event_type: EventType
    owner: str
    request_id: str
    target: str  # a subscriber id, or REQUEST_TARGET
    subscriber_id: str | None = None
    url: str
    # Signs a delivery to a request's own URL when the request is deleted (its secret goes with
    # it). Never shown, and gone with the delivery.
    secret: str | None = None
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    # Attempts this delivery may use before it is failed; a redelivery raises it by one.
    max_attempts: int
    log: list[AttemptRecord] = []
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    lease_until: datetime = _EPOCH
    queued_until: datetime = _EPOCH
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None
    expires_at: datetime | None = None  # deleted then, with its event (a TTL index)


class WebhookSubscriberRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[WEBHOOK_SUBSCRIBERS]

    async def create(self, record: SubscriberRecord) -> None:
        await self._collection.insert_one(record.model_dump(by_alias=True))

    async def get(self, subscriber_id: str, *, owner: str | None = None) -> SubscriberRecord | None:
        """The subscriber; with ``owner``, only if it is that owner's."""
        query: dict[str, Any] = {"_id": subscriber_id}
        if owner is not None:
            query["owner"] = owner
        doc = await self._collection.find_one(query)
        return SubscriberRecord.model_validate(doc) if doc else None

    async def for_owner(self, owner: str) -> list[SubscriberRecord]:
        cursor = self._collection.find({"owner": owner}).sort("created_at", 1)
        return [SubscriberRecord.model_validate(doc) async for doc in cursor]

    async def subscribed(self, owner: str, event_type: EventType) -> list[SubscriberRecord]:
        cursor = self._collection.find(
            {"owner": owner, "events": event_type, "disabled_at": None}
        ).sort("created_at", 1)
        return [SubscriberRecord.model_validate(doc) async for doc in cursor]

    async def existing(self, subscriber_ids: Sequence[str]) -> set[str]:
        cursor = self._collection.find({"_id": {"$in": list(subscriber_ids)}}, {"_id": 1})
        return {str(doc["_id"]) async for doc in cursor}

    async def delete(self, subscriber_id: str, *, owner: str) -> bool:
        result = await self._collection.delete_one({"_id": subscriber_id, "owner": owner})
        return result.deleted_count == 1

    async def rotate_secret(
        self, subscriber_id: str, *, owner: str, secret: str, overlap: timedelta
    ) -> SubscriberRecord | None:
        """Make ``secret`` current; the one it replaces keeps signing for ``overlap``."""
        current = await self.get(subscriber_id, owner=owner)
        if current is None:
            return None
        rotated_at = now()
        doc = await self._collection.find_one_and_update(
            # Conditional on the secret we read, so two concurrent rotations cannot both keep
            # "the previous secret" while one of them silently drops the other's new one.
            {"_id": subscriber_id, "owner": owner, "secret": current.secret},
            {
                "$set": {
                    "secret": secret,
                    "previous_secret": current.secret,
                    "previous_secret_expires_at": rotated_at + overlap,
                    "updated_at": rotated_at,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return SubscriberRecord.model_validate(doc) if doc else None

    async def disable(self, subscriber_id: str, reason: str) -> bool:
        disabled_at = now()
        result = await self._collection.update_one(
            {"_id": subscriber_id, "disabled_at": None},
            {
                "$set": {
                    "disabled_at": disabled_at,
                    "disabled_reason": reason,
                    "updated_at": disabled_at,
                }
            },
        )
        return result.modified_count == 1


class WebhookEventRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[WEBHOOK_EVENTS]

    async def create_once(self, record: EventRecord) -> EventRecord:
        """Store the event, or return the one already stored under its ``dedupe_key``."""
        try:
            await self._collection.insert_one(record.model_dump(by_alias=True))
        except DuplicateKeyError:
            doc = await self._collection.find_one({"dedupe_key": record.dedupe_key})
            if doc is None:  # the key clash was on _id, which is random: not ours to hide
                raise
            return EventRecord.model_validate(doc)
        return record

    async def get(self, event_id: str) -> EventRecord | None:
        doc = await self._collection.find_one({"_id": event_id})
        return EventRecord.model_validate(doc) if doc else None


class WebhookDeliveryRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[WEBHOOK_DELIVERIES]

    async def create_many(self, records: Sequence[DeliveryRecord]) -> None:
        """Insert deliveries, skipping any (event, target) pair that already has one."""
        for record in records:
            try:
                await self._collection.insert_one(record.model_dump(by_alias=True))
            except DuplicateKeyError:
                continue

    async def get(self, delivery_id: str, *, owner: str | None = None) -> DeliveryRecord | None:
        query: dict[str, Any] = {"_id": delivery_id}
        if owner is not None:
            query["owner"] = owner
        doc = await self._collection.find_one(query)
        return DeliveryRecord.model_validate(doc) if doc else None

    async def ids_for_event(self, event_id: str) -> list[str]:
        cursor = self._collection.find({"event_id": event_id}, {"_id": 1})
        return [str(doc["_id"]) async for doc in cursor]

    async def for_request_target(self, request_id: str) -> DeliveryRecord | None:
        """The latest delivery to a request's own ``webhook_url`` (a retried request that
        completes again has one per completion)."""
        cursor = (
            self._collection.find({"request_id": request_id, "target": REQUEST_TARGET})
            .sort("created_at", -1)
            .limit(1)
        )
        docs = await cursor.to_list()
        return DeliveryRecord.model_validate(docs[0]) if docs else None

    async def for_subscriber(
        self, subscriber_id: str, *, offset: int, limit: int
    ) -> list[DeliveryRecord]:
        cursor = (
            self._collection.find({"subscriber_id": subscriber_id})
            .sort("created_at", -1)
            .skip(offset)
            .limit(limit)
        )
        return [DeliveryRecord.model_validate(doc) async for doc in cursor]

    def _due(self, at: datetime) -> Document:
        return {
            "state": DeliveryState.PENDING,
            "next_attempt_at": {"$lte": at},
            "lease_until": {"$lte": at},
        }

    async def due(self, *, limit: int) -> list[tuple[str, str]]:
        """(delivery id, owner) of deliveries whose next attempt is due, oldest first."""
        at = now()
        # An equality and a range on the (state, next_attempt_at) index; whether an attempt is
        # in flight or already queued is checked here, on the few pending deliveries it finds.
        cursor = self._collection.find(
            {"state": DeliveryState.PENDING, "next_attempt_at": {"$lte": at}},
            {"_id": 1, "owner": 1, "lease_until": 1, "queued_until": 1},
        ).sort("next_attempt_at", 1)
        due: list[tuple[str, str]] = []
        async for doc in cursor:
            if doc.get("lease_until", _EPOCH) <= at and doc.get("queued_until", _EPOCH) <= at:
                due.append((str(doc["_id"]), str(doc["owner"])))
                if len(due) >= limit:
                    break
        return due

    async def postpone(self, delivery_ids: Sequence[str]) -> None:
        """Send due deliveries to the back of the line (their owner has enough in flight)."""
        if delivery_ids:
            await self._collection.update_many(
                {"_id": {"$in": list(delivery_ids)}, "state": DeliveryState.PENDING},
                {"$set": {"next_attempt_at": now()}},
            )

    async def in_flight(self, delivery_ids: Sequence[str]) -> set[str]:
        """Those of these deliveries that are queued or being attempted right now."""
        at = now()
        cursor = self._collection.find(
            {"_id": {"$in": list(delivery_ids)}},
            {"state": 1, "lease_until": 1, "queued_until": 1},
        )
        return {
            str(doc["_id"])
            async for doc in cursor
            if doc["state"] == DeliveryState.PENDING
            and (doc.get("lease_until", _EPOCH) > at or doc.get("queued_until", _EPOCH) > at)
        }

    async def mark_queued(self, delivery_id: str, *, hold: timedelta) -> bool:
        """Note that a message for this due delivery is on its way; False if one already is."""
        at = now()
        result = await self._collection.update_one(
            {"_id": delivery_id, **self._due(at), "queued_until": {"$lte": at}},
            {"$set": {"queued_until": at + hold}},
        )
        return result.modified_count == 1

    async def claim(self, delivery_id: str, *, lease: timedelta) -> DeliveryRecord | None:
        """Take the next attempt of a due delivery; None if it is not due or someone has it."""
        at = now()
        doc = await self._collection.find_one_and_update(
            {"_id": delivery_id, **self._due(at)},
            {"$set": {"lease_until": at + lease}},
            return_document=ReturnDocument.AFTER,
        )
        return DeliveryRecord.model_validate(doc) if doc else None

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: AttemptRecord,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> DeliveryRecord | None:
        at = now()
        fields: dict[str, Any] = {
            "state": state,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
            "next_attempt_at": next_attempt_at,
            "lease_until": at,
            "queued_until": _EPOCH,
            "updated_at": at,
        }
        if state == DeliveryState.DELIVERED:
            fields["delivered_at"] = at
        doc = await self._collection.find_one_and_update(
            {"_id": delivery_id},
            {"$push": {"log": attempt.model_dump()}, "$inc": {"attempts": 1}, "$set": fields},
            return_document=ReturnDocument.AFTER,
        )
        return DeliveryRecord.model_validate(doc) if doc else None

    async def give_up(self, delivery_id: str, reason: str) -> None:
        """Fail a delivery without an attempt (its subscriber or request is gone)."""
        at = now()
        await self._collection.update_one(
            {"_id": delivery_id},
            {
                "$set": {
                    "state": DeliveryState.FAILED,
                    "last_error": reason,
                    "next_attempt_at": None,
                    "lease_until": at,
                    "updated_at": at,
                }
            },
        )

    async def rearm(self, delivery_id: str, *, owner: str) -> DeliveryRecord | None:
        """Schedule one more attempt now, whatever the delivery's state (a manual redelivery)."""
        current = await self.get(delivery_id, owner=owner)
        if current is None:
            return None
        at = now()
        doc = await self._collection.find_one_and_update(
            {"_id": delivery_id, "owner": owner},
            {
                "$set": {
                    "state": DeliveryState.PENDING,
                    "next_attempt_at": at,
                    "max_attempts": max(current.max_attempts, current.attempts + 1),
                    "queued_until": _EPOCH,
                    "updated_at": at,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return DeliveryRecord.model_validate(doc) if doc else None
