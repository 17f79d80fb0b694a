"""Retention, in process: results go when their request expires, and never from under a
request that is still running."""

from __future__ import annotations

from datetime import timedelta

from imgbatch.models.requests import RequestStatus, now
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.retention import expire_requests
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.origin import Origin
from tests.support.seeding import seed_request


def test_a_request_still_in_progress_at_its_expiry_is_left_alone(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    request_id = seed_request(
        rt, [[origin.url("/img/coffee.jpg")]], status=RequestStatus.IN_PROGRESS
    )
    past = now() - timedelta(days=2)
    rt.run(rt.db["requests"].update_one({"_id": request_id}, {"$set": {"expires_at": past}}))

    assert rt.run(expire_requests(rt)) == 0
    rt.run(rt.client.admin.command("secantusAdmin.pruneTtl"))

    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.IN_PROGRESS
    assert not record.is_expired(now())
    assert rt.run(rt.products.get(request_id, 1)) is not None


def test_a_request_that_finishes_after_its_expiry_is_kept_a_day(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    request_id = seed_request(rt, [[origin.url("/img/coffee.jpg")]])
    rt.run(dispatch_request(rt, request_id))
    past = now() - timedelta(days=2)
    rt.run(rt.db["requests"].update_one({"_id": request_id}, {"$set": {"expires_at": past}}))

    rt.run(process_products(rt, request_id, [1]))

    record = rt.run(rt.requests.get(request_id))
    assert record is not None
    assert record.status == RequestStatus.COMPLETED
    assert record.expires_at is not None
    assert record.expires_at > now() + timedelta(hours=23)
    assert not record.is_expired(now())
    assert rt.run(expire_requests(rt)) == 0
