"""Webhook tasks on the ``imgbatch.webhooks`` queue: thin wrappers taking ids.

``deliver`` is not idempotent (it POSTs), so it is acknowledged early: if a worker dies mid-
attempt, the delivery's lease runs out and the beat poller hands it out again. No task ever
waits for a retry; the next attempt is a timestamp in MongoDB.
"""

from __future__ import annotations

from webhooks.delivery import deliver as _deliver
from webhooks.delivery import enqueue_due
from worker.app import WEBHOOK_DELIVER_TASK, WEBHOOK_DUE_TASK, celery_app
from worker.runtime import runtime


@celery_app.task(name=WEBHOOK_DELIVER_TASK, acks_late=False)
def deliver(delivery_id: str) -> None:
    rt = runtime()
    rt.run(_deliver(rt, delivery_id))


@celery_app.task(name=WEBHOOK_DUE_TASK, acks_late=False)
def deliver_due() -> int:
    rt = runtime()
    return rt.run(enqueue_due(rt))
