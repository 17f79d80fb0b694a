"""Which due webhook deliveries become task messages now: fairly, per owner.

Deliveries wait in MongoDB (``next_attempt_at``) and become Celery messages only here. Each
owner may have at most ``WEBHOOK_OWNER_CONCURRENCY`` deliveries queued or in flight, held as
slots (models.slots), and the due ones are taken round-robin across owners. Here, below the
webhook tasks, so that whoever publishes an event (the webhook worker, the API deleting a
request, an image worker) queues its deliveries the same way; the beat poller
(webhooks.scheduling) queues whatever is left.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator, Sequence

from imgbatch.domain.services import Services
from imgbatch.models.slots import SlotRepository, Take
from imgbatch.models.webhooks import QUEUE_HOLD, WebhookDeliveryRepository

DELIVERY_SLOT = "webhook_delivery"
# Due deliveries one poll looks at. When it is full, those left waiting go to the back of the
# line, so the next poll sees the ones behind them (another owner's) first.
DUE_BATCH = 200


async def enqueue(rt: Services, due: Sequence[tuple[str, str]]) -> int:
    """Queue what each owner has room for, round-robin across owners; returns how many."""
    queued, _ = await enqueue_fairly(rt, due)
    return queued


async def enqueue_fairly(rt: Services, due: Sequence[tuple[str, str]]) -> tuple[int, list[str]]:
    """Queue what each owner has room for; (how many were queued, the ids left waiting)."""
    slots = SlotRepository(rt.db)
    deliveries = WebhookDeliveryRepository(rt.db)
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
