"""Registering and removing webhook subscribers, at most ``MAX_WEBHOOK_SUBSCRIBERS`` per key.

Every event fans out to all of an owner's subscribers, so their number is capped. The cap is
held as slots (models.slots): concurrent registrations cannot pass it together. A slot whose
subscriber never got written (the process died in between) is returned by the reconciler.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from imgbatch.core.errors import Conflict
from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.models.requests import now
from imgbatch.models.slots import Take
from imgbatch.models.webhooks import SubscriberRecord

logger = logging.getLogger(__name__)

SUBSCRIBER_SLOT = "webhook_subscriber"
# Registering writes the subscriber right after taking its slot.
_REGISTER_GRACE = timedelta(minutes=1)


async def register(svc: Services, record: SubscriberRecord) -> None:
    """Store a new subscriber; 409 if its owner has as many as allowed."""
    cap = svc.settings.max_webhook_subscribers
    slots = svc.slots
    taken = await slots.take(SUBSCRIBER_SLOT, record.owner, record.id, cap=cap)
    if taken.outcome == Take.FULL:
        raise Conflict(
            f"this key has {cap} webhook subscribers, the most it may have; delete one first"
        )
    try:
        await svc.subscribers.create(record)
    except BaseException:
        if taken.slot_id is not None:
            await slots.give_back(taken.slot_id)
        raise


async def unregister(svc: Services, subscriber_id: str, *, owner: str) -> bool:
    deleted = await svc.subscribers.delete(subscriber_id, owner=owner)
    if deleted:
        await svc.slots.release(subscriber_id)
    return deleted


async def repair(svc: Services) -> int:
    """Return the slots of subscribers that do not exist; returns how many."""
    slots = svc.slots
    held = await slots.of_kind(SUBSCRIBER_SLOT)
    if not held:
        return 0
    existing = await svc.subscribers.existing([s.holder for s in held])
    registered_before = now() - _REGISTER_GRACE
    returned = 0
    for slot in held:
        if slot.holder not in existing and slot.taken_at < registered_before:
            await slots.release(slot.holder)
            log_event(logger, "webhook.subscriber_slot_returned", subscriber_id=slot.holder)
            returned += 1
    return returned
