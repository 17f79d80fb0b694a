"""Product leases, in process: a run that died loses its products once its lease runs out, and
only a reclaimed lease counts as an attempt."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from imgbatch.models.products import ProductStatus
from imgbatch.models.requests import RequestStatus
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.origin import Origin
from tests.support.seeding import seed_request

LEASE = 0.5


def _short_leases(rt: WorkerRuntime) -> timedelta:
    rt.settings = rt.settings.model_copy(update={"product_lease_seconds": LEASE})
    return timedelta(seconds=LEASE)


def test_a_dead_runs_product_is_reclaimed_once_its_lease_runs_out(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    lease = _short_leases(rt)
    path = "/img/coffee.jpg?lease=dead-run"
    request_id = seed_request(rt, [[origin.url(path)], [origin.url("/img/rocket.jpg")]])
    rt.run(dispatch_request(rt, request_id))
    # A run claimed the chunk and died at once: nobody renews its leases.
    assert len(rt.run(rt.products.claim_many(request_id, [1, 2], token="dead", lease=lease))) == 2

    # Its message comes back: the products are held, so the new run waits for the lease.
    rt.run(process_products(rt, request_id, [1, 2]))

    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.COMPLETED
    for serial in (1, 2):
        product = rt.run(rt.products.get(request_id, serial))
        assert product is not None
        assert (product.status, product.attempts) == (ProductStatus.COMPLETED, 2)
    assert origin.requests.paths().count(path) == 1


def test_a_product_whose_runs_keep_dying_fails_as_a_worker_crash(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    path = "/img/coffee.jpg?lease=poison"
    request_id = seed_request(rt, [[origin.url(path)]])
    rt.run(dispatch_request(rt, request_id))
    # MAX_ATTEMPTS runs took it and died with it, each lease running out at once.
    gone = timedelta(0)
    assert rt.run(rt.products.claim_many(request_id, [1], token="run-1", lease=gone))
    for attempt in range(2, rt.settings.max_attempts + 1):
        assert rt.run(rt.products.claim(request_id, 1, token=f"run-{attempt}", lease=gone))

    rt.run(process_products(rt, request_id, [1]))

    product = rt.run(rt.products.get(request_id, 1))
    assert product is not None
    assert product.status == ProductStatus.FAILED
    assert product.attempts == rt.settings.max_attempts + 1
    assert [e.code for e in product.errors] == ["worker_crash"]
    assert origin.requests.paths().count(path) == 0


def test_a_rerun_takes_a_dead_runs_products_one_at_a_time(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    # If the product it works on takes this run down too, the others must not have been
    # claimed with it: each claim is an attempt, and three attempts fail a product.
    rt = isolated
    lease = _short_leases(rt)
    urls = [origin.url("/slow/coffee.jpg?delay=30&lease=killer")]
    urls += [origin.url(f"/img/rocket.jpg?lease=bystander-{i}") for i in (2, 3)]
    request_id = seed_request(rt, [[url] for url in urls])
    rt.run(dispatch_request(rt, request_id))
    assert (
        len(rt.run(rt.products.claim_many(request_id, [1, 2, 3], token="dead", lease=lease))) == 3
    )

    async def rerun_dies_in_the_first_product() -> None:
        rerun = asyncio.create_task(process_products(rt, request_id, [1, 2, 3]))
        while (await rt.products.get(request_id, 1)).attempts < 2:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        rerun.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rerun

    rt.run(rerun_dies_in_the_first_product())

    attempts = {s: rt.run(rt.products.get(request_id, s)).attempts for s in (1, 2, 3)}  # type: ignore[union-attr]
    assert attempts == {1: 2, 2: 1, 3: 1}
