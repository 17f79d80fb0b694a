"""Webhook tasks on the ``imgbatch.webhooks`` queue: thin wrappers taking ids.

They are ``shared_task``s: the worker's app includes this module by name, so neither package
imports the other. ``request_finished`` is idempotent (the event is stored once per completion)
and acknowledged late; it also writes a completed request's result files
(``domain.results``). ``deliver`` is not idempotent (it POSTs), so it is acknowledged early: if
a worker dies mid-attempt, the delivery's lease runs out and the beat poller hands it out again.
No task ever waits for a retry; the next attempt is a timestamp in MongoDB.
"""

from __future__ import annotations

from celery import shared_task

from imgbatch.domain.results import write_result_files
from imgbatch.domain.runtime import runtime
from imgbatch.domain.taskqueue import (
    REQUEST_FINISHED_TASK,
    RETRY_ON_OUTAGE,
    WEBHOOK_DELIVER_TASK,
    WEBHOOK_DUE_TASK,
)
from imgbatch.webhooks.delivery import deliver as _deliver
from imgbatch.webhooks.events import publish_request_event
from imgbatch.webhooks.scheduling import enqueue_due


@shared_task(name=REQUEST_FINISHED_TASK, acks_late=True, **RETRY_ON_OUTAGE)
def request_finished(request_id: str) -> None:
    rt = runtime()
    rt.run(publish_request_event(rt, request_id))
    # A completed request's result files, written once for every download to stream. After
    # the notice, so it is not delayed by a large request's render: a download in between is
    # rendered live, with the same bytes. Repeatable, like the notice.
    rt.run(write_result_files(rt, request_id))


@shared_task(name=WEBHOOK_DELIVER_TASK, acks_late=False)
def deliver(delivery_id: str) -> None:
    rt = runtime()
    rt.run(_deliver(rt, delivery_id))


@shared_task(name=WEBHOOK_DUE_TASK, acks_late=False)
def deliver_due() -> int:
    rt = runtime()
    return rt.run(enqueue_due(rt))
