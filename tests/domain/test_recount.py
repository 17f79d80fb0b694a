"""Recounting against workers that are counting at the same moment: never twice, never early.

A worker counts a product in two writes: the product's move to a final state, then the
request's counters. Those steps and the reconciler's recount are driven one by one, in process,
in the interleavings that used to count a product twice (and complete its request one product
early) or could lose it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from imgbatch.domain.completion import complete_when_counted
from imgbatch.domain.recount import recount
from imgbatch.models.products import Finished, ImageError
from imgbatch.models.requests import RequestStatus
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.origin import Origin
from tests.support.seeding import seed_request

TOKEN = uuid.uuid4().hex  # the worker run's count key
LEASE = timedelta(minutes=2)


@pytest.fixture
def two_products(isolated: WorkerRuntime, origin: Origin) -> str:
    """A dispatched request of two products, the first claimed by a worker run."""
    rt = isolated
    url = origin.url("/img/coffee.jpg")
    request_id = seed_request(rt, [[url], [url]])
    rt.run(dispatch_request(rt, request_id))
    assert rt.run(rt.products.claim(request_id, 1, token=TOKEN, lease=LEASE)) is not None
    return request_id


def _finish(rt: WorkerRuntime, request_id: str) -> None:
    """The worker's first write: product 1 is final."""
    key = f"{request_id}/1/0.jpg"
    assert rt.run(
        rt.products.finish(
            request_id, 1, output_keys=[key], errors=[], count_token=TOKEN, count_seq=1
        )
    )


def _count(rt: WorkerRuntime, request_id: str) -> bool:
    """The worker's second write: product 1 on the request's counters."""
    return rt.run(
        rt.requests.count_product(request_id, token=TOKEN, seq=1, images_done=1, images_failed=0)
    )


def _finish_and_count(rt: WorkerRuntime, request_id: str) -> None:
    _finish(rt, request_id)
    assert _count(rt, request_id)


def _assert_counted_once_and_running(rt: WorkerRuntime, request_id: str) -> None:
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert (record.products_done, record.images_done, record.images_failed) == (1, 1, 0)
    assert not rt.run(complete_when_counted(rt, request_id))
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.IN_PROGRESS  # product 2 has not even started


def test_a_recount_between_a_products_finish_and_its_count_counts_it_once(
    isolated: WorkerRuntime, two_products: str
) -> None:
    rt, request_id = isolated, two_products
    _finish(rt, request_id)  # the worker has moved product 1 to its final state...
    assert rt.run(recount(rt, request_id)) == 1  # ...the reconciler counts it (the run stalls)
    assert not _count(rt, request_id)  # ...and then the worker's own count arrives
    _assert_counted_once_and_running(rt, request_id)


def test_a_count_that_landed_before_its_run_died_is_not_recounted(
    isolated: WorkerRuntime, two_products: str
) -> None:
    rt, request_id = isolated, two_products
    _finish_and_count(rt, request_id)
    # The run died before it could note on product 1 that its count had landed.
    assert rt.run(recount(rt, request_id)) == 0
    assert rt.run(recount(rt, request_id)) == 0
    _assert_counted_once_and_running(rt, request_id)


def test_a_run_that_settled_its_counts_leaves_nothing_to_recount(
    isolated: WorkerRuntime, two_products: str
) -> None:
    rt, request_id = isolated, two_products
    _finish_and_count(rt, request_id)
    assert rt.run(rt.products.mark_counted(request_id, [1])) == 1
    rt.run(rt.requests.forget_count_run(request_id, TOKEN))
    assert rt.run(recount(rt, request_id)) == 0
    _assert_counted_once_and_running(rt, request_id)


@pytest.fixture
def three_claimed(isolated: WorkerRuntime, origin: Origin) -> str:
    """A dispatched request of three products, all claimed by one worker run."""
    rt = isolated
    url = origin.url("/img/coffee.jpg")
    request_id = seed_request(rt, [[url], [url, url], [url]])
    rt.run(dispatch_request(rt, request_id))
    assert len(rt.run(rt.products.claim_many(request_id, [1, 2, 3], token=TOKEN, lease=LEASE)))
    return request_id


def _flush_moves(rt: WorkerRuntime, request_id: str) -> None:
    """A flush's first write: products 1 and 2 final in one bulk write, under seqs 1 and 2."""
    finished = [
        Finished(1, [f"{request_id}/1/0.jpg"], [], [None]),
        Finished(2, [f"{request_id}/2/0.jpg", None], [_error(1)], [None, None]),
    ]
    moved = rt.run(rt.products.finish_many(request_id, finished, TOKEN, 1))
    assert set(moved) == {1, 2}


def _flush_count(rt: WorkerRuntime, request_id: str) -> bool:
    """A flush's second write: both on the request's counters in one update."""
    return rt.run(
        rt.requests.count_products(
            request_id, token=TOKEN, seqs=[1, 2], images_done=2, images_failed=1
        )
    )


def _error(index: int) -> ImageError:
    return ImageError(index=index, url="u", code="http_error", message="404")


def _assert_flush_counted_once(rt: WorkerRuntime, request_id: str) -> None:
    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert (record.products_done, record.images_done, record.images_failed) == (2, 2, 1)
    assert record.status == RequestStatus.IN_PROGRESS  # product 3 is still being processed


def test_a_recount_of_a_flush_whose_count_did_not_land_counts_each_product_once(
    isolated: WorkerRuntime, three_claimed: str
) -> None:
    """The run stalls after the flush's final moves; the reconciler counts them one at a time,
    and the run's own count arrives after it, or between its two counts."""
    rt, request_id = isolated, three_claimed
    _flush_moves(rt, request_id)
    assert rt.run(recount(rt, request_id)) == 2
    assert not _flush_count(rt, request_id)
    _assert_flush_counted_once(rt, request_id)


def test_a_flush_count_between_a_recounts_two_counts_is_not_made(
    isolated: WorkerRuntime, three_claimed: str
) -> None:
    rt, request_id = isolated, three_claimed
    _flush_moves(rt, request_id)
    # The reconciler has counted the first product of the flush (its write for the second is
    # still to come) when the run's own count of both arrives: it must not land.
    assert rt.run(
        rt.requests.count_product(request_id, token=TOKEN, seq=1, images_done=1, images_failed=0)
    )
    assert not _flush_count(rt, request_id)
    assert rt.run(recount(rt, request_id)) == 1  # the second product; the first was in
    _assert_flush_counted_once(rt, request_id)


def test_a_recount_after_a_flush_counted_adds_nothing(
    isolated: WorkerRuntime, three_claimed: str
) -> None:
    rt, request_id = isolated, three_claimed
    _flush_moves(rt, request_id)
    assert _flush_count(rt, request_id)  # counted, but the run died before settling
    assert rt.run(recount(rt, request_id)) == 0
    _assert_flush_counted_once(rt, request_id)


def test_a_flush_count_after_a_recount_of_part_of_it_adds_the_rest(
    isolated: WorkerRuntime, three_claimed: str
) -> None:
    """The reconciler has counted the flush's first product and not its second (a recount
    after a broker loss takes counts over whoever's run they are) when the run's own count
    arrives. The group write alone is refused: the run adds the second one by itself, or no one
    ever would (the bench's 1,000-image batch stood at 994 of 1,000 for good)."""
    rt, request_id = isolated, three_claimed
    _flush_moves(rt, request_id)
    assert rt.run(
        rt.requests.count_product(request_id, token=TOKEN, seq=1, images_done=1, images_failed=0)
    )
    counts = {1: (1, 0), 2: (1, 1)}
    assert rt.run(rt.requests.count_flush(request_id, token=TOKEN, counts=counts)) == 1
    assert rt.run(recount(rt, request_id)) == 0
    _assert_flush_counted_once(rt, request_id)
