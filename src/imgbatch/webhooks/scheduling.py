"""Which due deliveries go to the webhook worker now: fairly, per owner.

Deliveries wait in MongoDB (``next_attempt_at``) and become Celery messages only here. Each
owner may have at most ``WEBHOOK_OWNER_CONCURRENCY`` deliveries queued or in flight, held as
slots (models.slots), and the due ones are taken round-robin across owners
(domain.webhook_queue). So a tenant with a
hundred subscribers on a receiver that never answers occupies a couple of the worker's threads
and queues behind its own deliveries, while every other tenant's go straight through. A slot is
given back when its attempt is recorded; one whose message was lost (Redis restarted) is
returned by the next poll, once its delivery is neither queued nor leased.
"""

from __future__ import annotations

import logging

from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.domain.webhook_queue import DELIVERY_SLOT, DUE_BATCH, enqueue_fairly
from imgbatch.models.slots import SlotRepository
from imgbatch.models.webhooks import WebhookDeliveryRepository

logger = logging.getLogger(__name__)


async def enqueue_due(rt: Services) -> int:
    """The beat poller: queue the due deliveries that their owners have room for."""
    deliveries = WebhookDeliveryRepository(rt.db)
    await _return_lost_slots(rt)
    due = await deliveries.due(limit=DUE_BATCH)
    queued, waiting = await enqueue_fairly(rt, due)
    if len(due) >= DUE_BATCH and waiting:
        await deliveries.postpone(waiting)
    return queued


async def attempt_over(rt: Services, delivery_id: str) -> None:
    """An attempt was made (or the delivery given up): its owner's slot is free again."""
    await SlotRepository(rt.db).release(delivery_id)


async def _return_lost_slots(rt: Services) -> None:
    slots = SlotRepository(rt.db)
    held = await slots.of_kind(DELIVERY_SLOT)
    if not held:
        return
    busy = await WebhookDeliveryRepository(rt.db).in_flight([slot.holder for slot in held])
    for slot in held:
        if slot.holder not in busy:
            await slots.release(slot.holder)
            log_event(logger, "webhook.slot_returned", delivery_id=slot.holder, owner=slot.owner)
