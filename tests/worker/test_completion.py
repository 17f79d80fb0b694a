"""Idempotency and the completion race, run in-process against the real MongoDB and Redis.

The tasks' domain functions run here in the test process with their own database and Redis
database, so no other worker consumes what they enqueue and the queue can be counted.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from imgbatch.domain.taskqueue import DISPATCH_QUEUE, IMAGES_QUEUE, WEBHOOKS_QUEUE
from imgbatch.models.products import ProductStatus
from imgbatch.models.requests import RequestStatus
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.inprocess import queue_length
from tests.support.origin import Origin
from tests.support.seeding import seed_request

LEASE = timedelta(minutes=2)


def test_a_product_run_twice_counts_once(isolated: WorkerRuntime, origin: Origin) -> None:
    rt = isolated
    urls = [origin.url("/img/chelsea.jpg"), origin.url("/status/404")]
    request_id = seed_request(rt, [urls, [origin.url("/img/rocket.jpg")]])
    rt.run(dispatch_request(rt, request_id))
    assert queue_length(rt, IMAGES_QUEUE) == 1  # both products travel in one task

    rt.run(process_products(rt, request_id, [1]))
    rt.run(process_products(rt, request_id, [1]))  # a redelivered message
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert (record.products_done, record.images_done, record.images_failed) == (1, 1, 1)
    assert record.status == RequestStatus.IN_PROGRESS

    rt.run(process_products(rt, request_id, [2]))
    rt.run(process_products(rt, request_id, [2]))
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert (record.products_done, record.images_done, record.images_failed) == (2, 2, 1)
    assert record.status == RequestStatus.COMPLETED
    assert queue_length(rt, WEBHOOKS_QUEUE) == 1
    # Clean runs settle their counts and take their count keys away with them.
    assert rt.run(rt.products.unsettled_counts(request_id)) == []
    stored = rt.run(rt.db["requests"].find_one({"_id": request_id}))
    assert stored is not None
    assert stored.get("count_runs", {}) == {}


def test_concurrent_last_products_complete_the_request_exactly_once(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    url = origin.url("/img/coffee.jpg")
    for _ in range(5):
        request_id = seed_request(rt, [[url], [url], [url]])
        rt.run(dispatch_request(rt, request_id))

        async def race(request_id: str) -> None:
            # Every product twice, all at once: the two last finishers race for completion.
            await asyncio.gather(
                *(process_products(rt, request_id, [s]) for s in (1, 2, 3, 1, 2, 3))
            )

        rt.run(race(request_id))
        record = rt.run(rt.requests.get(request_id))
        assert record is not None
        assert record.status == RequestStatus.COMPLETED
        assert (record.products_done, record.images_done, record.images_failed) == (3, 3, 0)
    assert queue_length(rt, WEBHOOKS_QUEUE) == 5
    assert queue_length(rt, DISPATCH_QUEUE) == 0


def test_a_chunk_skips_finished_products_and_completes_its_request(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    url = origin.url("/img/coffee.jpg")
    request_id = seed_request(rt, [[url], [url, origin.url("/status/404")], [url], [url]])
    rt.run(dispatch_request(rt, request_id))
    rt.run(process_products(rt, request_id, [2]))  # an earlier chunk already finished product 2

    rt.run(process_products(rt, request_id, [1, 2, 3, 4]))

    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.COMPLETED
    assert (record.products_done, record.images_done, record.images_failed) == (4, 4, 1)
    products = {s: rt.run(rt.products.get(request_id, s)) for s in (1, 2, 3, 4)}
    assert {s: (p.status, p.attempts) for s, p in products.items() if p} == {
        1: (ProductStatus.COMPLETED, 1),
        2: (ProductStatus.PARTIAL, 1),  # not claimed again
        3: (ProductStatus.COMPLETED, 1),
        4: (ProductStatus.COMPLETED, 1),
    }
    assert queue_length(rt, WEBHOOKS_QUEUE) == 1


def test_a_rerun_chunk_completes_a_request_whose_products_were_all_counted(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    # The run that counted the last product died before it looked at the counters: the
    # redelivered message finds nothing to do but must still complete the request.
    rt = isolated
    request_id = seed_request(rt, [[origin.url("/img/coffee.jpg")]])
    rt.run(dispatch_request(rt, request_id))
    product = rt.run(rt.products.claim(request_id, 1, token="t", lease=LEASE))
    assert product is not None
    key = f"{request_id}/1/0.jpg"
    rt.run(
        rt.products.finish(
            request_id, 1, output_keys=[key], errors=[], count_token="t", count_seq=1
        )
    )
    rt.run(rt.requests.count_product(request_id, token="t", seq=1, images_done=1, images_failed=0))
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.IN_PROGRESS

    rt.run(process_products(rt, request_id, [1]))

    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.COMPLETED
    assert (record.products_done, record.images_done) == (1, 1)
    assert queue_length(rt, WEBHOOKS_QUEUE) == 1


def test_duplicate_runs_of_a_chunk_process_each_product_once_per_attempt(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    # A redelivered or re-enqueued chunk can run while the original still does. Whatever runs
    # a product must have counted an attempt: that is what bounds its repeated work.
    rt = isolated
    urls = [[origin.url(f"/img/coffee.jpg?product={s}")] for s in (1, 2, 3)]
    request_id = seed_request(rt, urls)
    rt.run(dispatch_request(rt, request_id))
    origin.requests.clear()

    async def twice() -> None:
        await asyncio.gather(*(process_products(rt, request_id, [1, 2, 3]) for _ in range(2)))

    rt.run(twice())

    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.COMPLETED
    assert (record.products_done, record.images_done) == (3, 3)
    for serial in (1, 2, 3):
        product = rt.run(rt.products.get(request_id, serial))
        assert product is not None
        downloads = origin.requests.count(f"/img/coffee.jpg?product={serial}")
        assert 1 <= downloads <= product.attempts


def test_a_racing_chunk_claim_gets_only_what_it_moved(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    request_id = seed_request(rt, [[origin.url("/img/coffee.jpg")] for _ in range(3)])
    rt.run(dispatch_request(rt, request_id))

    first = rt.run(rt.products.claim_many(request_id, [1, 2, 3], token="first", lease=LEASE))
    # A duplicate run whose interruption check ran before the first run's claims landed.
    second = rt.run(rt.products.claim_many(request_id, [1, 2, 3], token="second", lease=LEASE))

    assert [p.serial_number for p in first] == [1, 2, 3]
    assert [p.attempts for p in first] == [1, 1, 1]
    assert second == []
