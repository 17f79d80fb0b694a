"""The audit entries the maintenance tasks write (reconciler repairs, expiry), run
in-process against the real MongoDB with a database and Redis database of their own, so the
reconciler sees only the requests made here."""

from __future__ import annotations

from datetime import timedelta

from imgbatch.models.audit import AuditRepository
from imgbatch.models.requests import RequestStatus, now
from imgbatch.worker.reconcile import reconcile
from imgbatch.worker.retention import expire_requests
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.seeding import seed_request


def events(rt: WorkerRuntime, request_id: str) -> list[str]:
    return [e.event for e in rt.run(AuditRepository(rt.db).for_request(request_id))]


def _age(rt: WorkerRuntime, request_id: str, **fields: object) -> None:
    rt.run(rt.db.requests.update_one({"_id": request_id}, {"$set": fields}))


def test_reconciler_repairs_are_recorded(isolated: WorkerRuntime) -> None:
    rt = isolated
    urls = [["https://images.example.com/a.jpg"], ["https://images.example.com/b.jpg"]]
    never_dispatched = seed_request(rt, urls)
    _age(rt, never_dispatched, updated_at=now() - timedelta(hours=1))
    stalled = seed_request(rt, urls, status=RequestStatus.IN_PROGRESS)
    _age(rt, stalled, updated_at=now() - timedelta(hours=1), dispatched_at=now())
    assert rt.run(reconcile(rt)) == 2
    assert events(rt, never_dispatched) == ["reconciler.redispatched"]
    requeued = rt.run(AuditRepository(rt.db).for_request(stalled))
    assert [e.event for e in requeued] == ["reconciler.requeued"]
    assert requeued[0].detail["requeued"] == 2


def test_expiry_is_recorded_on_the_tombstone(isolated: WorkerRuntime) -> None:
    rt = isolated
    request_id = seed_request(
        rt, [["https://images.example.com/a.jpg"]], status=RequestStatus.COMPLETED
    )
    _age(rt, request_id, expires_at=now() - timedelta(seconds=1))
    assert rt.run(expire_requests(rt)) == 1
    trail = rt.run(AuditRepository(rt.db).for_request(request_id))
    assert [e.event for e in trail] == ["request.expired"]
    assert trail[0].detail == {"products_deleted": 1, "media_deleted": 0}
