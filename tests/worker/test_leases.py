"""Product leases name their holder, so a dead holder's products are taken back at once, at
the default (not shortened) lease; a live holder's are never taken while it renews."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from datetime import timedelta

import psutil
import redis

from imgbatch.domain.taskqueue import IMAGES_QUEUE
from imgbatch.models.products import LeaseHolder, ProductStatus
from imgbatch.models.requests import RequestStatus
from imgbatch.worker import leases
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.reconcile import BROKER_MARKER, reconcile
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.inprocess import queue_length
from tests.support.origin import Origin
from tests.support.seeding import seed_request


def _dead_process() -> LeaseHolder:
    """A holder that was a real process on this host, and is gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = LeaseHolder(
        host=leases.this_process().host,
        pid=child.pid,
        started=psutil.Process(child.pid).create_time(),
    )
    child.kill()
    child.wait()
    return holder


def _default_lease(rt: WorkerRuntime) -> timedelta:
    return timedelta(seconds=rt.settings.product_lease_seconds)


def _two_products_dispatched(rt: WorkerRuntime) -> str:
    request_id = seed_request(
        rt, [["https://images.example.com/a.jpg"], ["https://images.example.com/b.jpg"]]
    )
    rt.run(dispatch_request(rt, request_id))
    return request_id


def _broker_kept_its_messages(rt: WorkerRuntime) -> None:
    """As after an earlier pass: the marker is there, so the broker lost nothing."""
    assert rt.settings.redis_url
    redis.Redis.from_url(rt.settings.redis_url).set(BROKER_MARKER, "0")


def test_a_rerun_takes_a_dead_holders_products_at_once_not_after_its_lease(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    request_id = seed_request(rt, [[origin.url("/img/coffee.jpg?held=dead")]])
    rt.run(dispatch_request(rt, request_id))
    # A run in another process claimed it, and that process was killed: its lease is whole.
    claimed = rt.run(
        rt.products.claim_many(
            request_id, [1], token="dead", lease=_default_lease(rt), holder=_dead_process()
        )
    )
    assert len(claimed) == 1

    started = time.monotonic()
    rt.run(process_products(rt, request_id, [1]))  # its message, delivered again

    assert time.monotonic() - started < rt.settings.product_lease_seconds / 2
    product = rt.run(rt.products.get(request_id, 1))
    assert product is not None
    assert (product.status, product.attempts) == (ProductStatus.COMPLETED, 2)


def test_the_reconciler_requeues_a_dead_holders_products_once_and_leaves_a_live_ones(
    isolated: WorkerRuntime,
) -> None:
    rt = isolated
    request_id = _two_products_dispatched(rt)
    lease = _default_lease(rt)
    rt.run(
        rt.products.claim_many(request_id, [1], token="dead", lease=lease, holder=_dead_process())
    )
    # The live one is this very test process, as a run that is still at work in it.
    rt.run(
        rt.products.claim_many(
            request_id, [2], token="live", lease=lease, holder=leases.this_process()
        )
    )
    queued = queue_length(rt, IMAGES_QUEUE)
    _broker_kept_its_messages(rt)

    with leases.running("live"):
        rt.run(reconcile(rt))
        rt.run(reconcile(rt))  # a second pass sends nothing again: it is in the queue

    assert queue_length(rt, IMAGES_QUEUE) == queued + 1
    dead = rt.run(rt.products.get(request_id, 1))
    live = rt.run(rt.products.get(request_id, 2))
    assert dead is not None and live is not None
    assert dead.lease_until is not None and dead.lease_until.year == 1970  # released
    assert live.lease_until == claimed_until(rt, request_id, 2)
    # A run of this process that ended without finishing it: gone as well.
    rt.run(reconcile(rt))
    assert queue_length(rt, IMAGES_QUEUE) == queued + 2


def test_a_run_that_dies_beside_a_held_product_leaves_none_of_its_chunk_pending(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    # A duplicate of a chunk (a broker loss re-sends every unfinished product) meets a product
    # another live run holds. Its other products are named by its message alone: if it dies
    # with them still pending, nothing sends them again before the message's redelivery (the
    # broker's visibility timeout, 15 minutes). Claimed, its death is seen on them at once.
    rt = isolated
    slow = [origin.url(f"/slow/coffee.jpg?delay=30&held=dying-{i}") for i in (2, 3)]
    request_id = seed_request(rt, [[origin.url("/img/rocket.jpg?held=live")], *([u] for u in slow)])
    rt.run(dispatch_request(rt, request_id))
    lease = _default_lease(rt)
    holder = leases.this_process()
    rt.run(rt.products.claim_many(request_id, [1], token="live", lease=lease, holder=holder))

    async def run_dies_while_downloading() -> None:
        run = asyncio.create_task(process_products(rt, request_id, [1, 2, 3]))
        deadline = time.monotonic() + 60
        while not any("held=dying" in path for path in origin.requests.paths()):
            assert time.monotonic() < deadline, "the run never started a download"
            await asyncio.sleep(0.05)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    rt.run(run_dies_while_downloading())
    queued = queue_length(rt, IMAGES_QUEUE)
    _broker_kept_its_messages(rt)
    with leases.running("live"):
        rt.run(reconcile(rt))

    # Both of the dead run's products went back to the queue, each alone; the live one did not.
    assert queue_length(rt, IMAGES_QUEUE) == queued + 2
    for serial in (2, 3):
        product = rt.run(rt.products.get(request_id, serial))
        assert product is not None
        assert (product.status, product.attempts) == (ProductStatus.PROCESSING, 1), serial
        assert product.requeued == product.claim, serial
    live = rt.run(rt.products.get(request_id, 1))
    assert live is not None and live.claim == "live" and live.requeued is None


def claimed_until(rt: WorkerRuntime, request_id: str, serial: int) -> object:
    product = rt.run(rt.products.get(request_id, serial))
    assert product is not None
    return product.lease_until


def test_a_broker_that_lost_its_messages_gets_them_again_on_the_next_pass(
    isolated: WorkerRuntime,
) -> None:
    rt = isolated
    request_id = _two_products_dispatched(rt)
    record = rt.run(rt.requests.get(request_id))
    assert record is not None and record.status == RequestStatus.IN_PROGRESS
    assert rt.settings.redis_url
    broker = redis.Redis.from_url(rt.settings.redis_url)
    rt.run(reconcile(rt))  # the first pass leaves its marker
    broker.flushdb()  # Redis restarted empty: the dispatched messages are gone
    assert queue_length(rt, IMAGES_QUEUE) == 0

    rt.run(reconcile(rt))

    assert queue_length(rt, IMAGES_QUEUE) > 0
    assert broker.exists(BROKER_MARKER)
    sent = queue_length(rt, IMAGES_QUEUE)
    rt.run(reconcile(rt))  # nothing was lost since: nothing is sent again
    assert queue_length(rt, IMAGES_QUEUE) == sent


def test_a_product_a_dead_run_finished_but_never_counted_is_counted_on_the_next_pass(
    isolated: WorkerRuntime,
) -> None:
    rt = isolated
    request_id = _two_products_dispatched(rt)
    lease = _default_lease(rt)
    for serial in (1, 2):
        rt.run(
            rt.products.claim_many(
                request_id, [serial], token=f"run-{serial}", lease=lease, holder=_dead_process()
            )
        )
        # Its run made the product's final move, then died before counting it.
        rt.run(
            rt.products.finish(
                request_id,
                serial,
                output_keys=["k"],
                errors=[],
                count_token=f"run-{serial}",
                count_seq=1,
            )
        )
    _broker_kept_its_messages(rt)
    before = rt.run(rt.requests.get(request_id))
    assert before is not None and (before.products_done, before.images_done) == (0, 0)

    rt.run(reconcile(rt))  # at once: not after REQUEST_IDLE_SECONDS

    after = rt.run(rt.requests.get(request_id))
    assert after is not None
    assert (after.status, after.products_done, after.images_done) == (
        RequestStatus.COMPLETED,
        2,
        2,
    )
