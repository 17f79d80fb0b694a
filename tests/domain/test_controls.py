"""Retrying a completed request's failed images, in process: one atomic transition back to
``in_progress`` that no concurrent completion check can undo, and a broker failure after it that
leaves work for the reconciler instead of an error."""

from __future__ import annotations

import asyncio

from imgbatch.cli.embedded import free_port
from imgbatch.domain.completion import complete_if_finished
from imgbatch.domain.controls import retry_failed
from imgbatch.domain.services import Services
from imgbatch.domain.taskqueue import IMAGES_QUEUE, CeleryTaskSender
from imgbatch.models.requests import RequestRecord, RequestStatus
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.reconcile import reconcile
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.inprocess import queue_length
from tests.support.origin import Origin
from tests.support.seeding import seed_request


def _completed_with_a_failure(rt: WorkerRuntime, origin: Origin) -> RequestRecord:
    """A completed request of two products, the second of which failed."""
    request_id = seed_request(rt, [[origin.url("/img/coffee.jpg")], [origin.url("/status/404")]])
    rt.run(dispatch_request(rt, request_id))
    rt.run(process_products(rt, request_id, [1, 2]))
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.COMPLETED
    assert (record.images_done, record.images_failed) == (1, 1)
    return record


def test_a_completion_check_during_a_retry_never_completes_it_again(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated

    async def retry_while_checking(record: RequestRecord) -> int:
        """Retry while another process checks for completion as fast as it can."""
        retried = asyncio.Event()
        completions = 0

        async def check() -> None:
            nonlocal completions
            while not retried.is_set():
                completions += await complete_if_finished(rt, record.id)
                await asyncio.sleep(0)

        checker = asyncio.create_task(check())
        try:
            await retry_failed(rt, record)
        finally:
            retried.set()
            await checker
        return completions

    for _ in range(10):
        record = _completed_with_a_failure(rt, origin)
        assert rt.run(retry_while_checking(record)) == 0
        after = rt.run(rt.requests.get(record.id))
        assert after is not None
        assert after.status == RequestStatus.IN_PROGRESS
        # Counted as it now stands: the failed product is pending again.
        assert (after.products_done, after.images_done, after.images_failed) == (1, 1, 0)


def test_a_broker_failure_after_a_retry_leaves_work_for_the_reconciler(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    record = _completed_with_a_failure(rt, origin)
    queued = queue_length(rt, IMAGES_QUEUE)
    down = rt.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    without_broker = Services(
        settings=rt.settings,
        db=rt.db,
        tasks=CeleryTaskSender.from_settings(down),
        store=rt.store,
        events=rt.events,
    )

    assert rt.run(retry_failed(without_broker, record)) == 1  # no error: the change is made

    after = rt.run(rt.requests.get(record.id))
    assert after is not None
    assert after.status == RequestStatus.IN_PROGRESS
    # Once the request has been idle, the reconciler sends the reopened product again.
    rt.settings = rt.settings.model_copy(update={"request_idle_seconds": 0.001})
    assert rt.run(reconcile(rt)) == 1
    assert queue_length(rt, IMAGES_QUEUE) == queued + 1
