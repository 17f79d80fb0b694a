"""Requests in flight, as slots: taken by an upload, given back by the request's end, and
returned by the reconciler when nothing gave them back."""

from __future__ import annotations

import uuid

import pytest

from imgbatch.domain import inflight
from imgbatch.domain.controls import cancel
from imgbatch.models.requests import RequestStatus
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.origin import Origin
from tests.support.seeding import seed_request


def test_a_finished_or_cancelled_request_gives_its_slot_back(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    rt.settings = rt.settings.model_copy(update={"max_requests_in_flight": 2})
    first = seed_request(rt, [[origin.url("/img/coffee.jpg")]])
    second = seed_request(rt, [[origin.url("/img/rocket.jpg")]])
    for request_id in (first, second):
        rt.run(inflight.reserve(rt, "local", request_id))
    with pytest.raises(inflight.TooManyInFlight):
        rt.run(inflight.reserve(rt, "local", uuid.uuid4().hex))

    rt.run(dispatch_request(rt, first))
    rt.run(process_products(rt, first, [1]))  # completes it
    record = rt.run(rt.requests.get(second))
    assert record is not None
    rt.run(cancel(rt, record))

    for _ in range(2):
        rt.run(inflight.reserve(rt, "local", uuid.uuid4().hex))
    with pytest.raises(inflight.TooManyInFlight):
        rt.run(inflight.reserve(rt, "local", uuid.uuid4().hex))


def test_the_reconciler_returns_slots_that_no_unfinished_request_holds(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    rt.settings = rt.settings.model_copy(
        update={"max_requests_in_flight": 3, "staging_ttl_seconds": 3600.0}
    )
    finished = seed_request(rt, [[origin.url("/img/coffee.jpg")]], status=RequestStatus.COMPLETED)
    running = seed_request(rt, [[origin.url("/img/coffee.jpg")]])
    uploading = uuid.uuid4().hex  # its request is not written yet
    for request_id in (finished, running, uploading):
        rt.run(inflight.reserve(rt, "local", request_id))  # its process died before the release

    assert rt.run(inflight.repair(rt)) == 1  # the finished request's
    rt.settings = rt.settings.model_copy(update={"staging_ttl_seconds": 0.001})
    assert rt.run(inflight.repair(rt)) == 1  # the upload that never wrote its request
    assert [s.holder for s in rt.run(rt.slots.of_kind(inflight.REQUEST_SLOT))] == [running]
