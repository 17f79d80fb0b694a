"""Which due deliveries go to the webhook worker now: fairly, per owner.

Deliveries wait in MongoDB (``next_attempt_at``) and become Celery messages only here. Each
owner may have at most ``WEBHOOK_OWNER_CONCURRENCY`` deliveries queued or in flight, held as
slots (models.slots), and the due ones are taken round-robin across owners. So a tenant with a
hundred subscribers on a receiver that never answers occupies a couple of the worker's threads
and queues behind its own deliveries, while every other tenant's go straight through. A slot is
given back when its attempt is recorded; one whose message was lost (Redis restarted) is
returned by the next poll, once its delivery is neither queued nor leased.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence

from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.models.slots import Take
from imgbatch.models.webhooks import QUEUE_HOLD

logger = logging.getLogger(__name__)

DELIVERY_SLOT = "webhook_delivery"
# Due deliveries one poll looks at. When it is full, those left waiting go to the back of the
# line, so the next poll sees the ones behind them (another owner's) first.
DUE_BATCH = 200


async def enqueue(rt: Services, due: Sequence[tuple[str, str]]) -> int:
    """Queue what each owner has room for, round-robin across owners; returns how many."""
    queued, _ = await _enqueue(rt, due)
    return queued


async def enqueue_due(rt: Services) -> int:
    """The beat poller: queue the due deliveries that their owners have room for."""
    deliveries = rt.deliveries
    await _return_lost_slots(rt)
    due = await deliveries.due(limit=DUE_BATCH)
    queued, waiting = await _enqueue(rt, due)
    if len(due) >= DUE_BATCH and waiting:
        await deliveries.postpone(waiting)
    return queued


async def attempt_over(rt: Services, delivery_id: str) -> None:
    """An attempt was made (or the delivery given up): its owner's slot is free again."""
    await rt.slots.release(delivery_id)


async def _enqueue(rt: Services, due: Sequence[tuple[str, str]]) -> tuple[int, list[str]]:
    slots = rt.slots
    deliveries = rt.deliveries
    cap = rt.settings.webhook_owner_concurrency
    full: set[str] = set()
    ready: list[str] = []
    waiting: list[str] = []
    for delivery_id, owner in _round_robin(due):
        if owner in full:
            waiting.append(delivery_id)
            continue
        taken = await slots.take(DELIVERY_SLOT, owner, delivery_id, cap=cap)
        if taken.outcome == Take.FULL:
            full.add(owner)
            waiting.append(delivery_id)
        elif await deliveries.mark_queued(delivery_id, hold=QUEUE_HOLD):
            ready.append(delivery_id)
        elif taken.slot_id is not None:
            # Someone else queued it meanwhile, with a slot of its own: give back only ours.
            await slots.give_back(taken.slot_id)
    queued = await rt.tasks.webhook_deliveries(ready) if ready else 0
    return queued, waiting


def _round_robin(due: Sequence[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Each owner's deliveries in their order, the owners taking turns."""
    lines: defaultdict[str, deque[str]] = defaultdict(deque)
    for delivery_id, owner in due:
        lines[owner].append(delivery_id)
    while lines:
        for owner in list(lines):
            yield lines[owner].popleft(), owner
            if not lines[owner]:
                del lines[owner]


async def _return_lost_slots(rt: Services) -> None:
    slots = rt.slots
    held = await slots.of_kind(DELIVERY_SLOT)
    if not held:
        return
    busy = await rt.deliveries.in_flight([slot.holder for slot in held])
    for slot in held:
        if slot.holder not in busy:
            await slots.release(slot.holder)
            log_event(logger, "webhook.slot_returned", delivery_id=slot.holder, owner=slot.owner)
