"""Every collection that grows with use is pruned: the TTL indexes exist, the documents carry
the dates they name, and the database's TTL pass (run on demand here, instead of waiting for
its minute) deletes what is past them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from imgbatch.models.idempotency import IdempotencyRepository
from imgbatch.models.migrations import migrate
from imgbatch.models.requests import RequestStatus, now
from imgbatch.webhooks.events import publish_request_event
from imgbatch.worker.retention import expire_requests
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.origin import Origin
from tests.support.seeding import seed_request


def _ttl_pass(rt: WorkerRuntime) -> None:
    """What the database does once a minute (SecantusDB's command for it; mongod's monitor)."""
    rt.run(rt.client.admin.command("secantusAdmin.pruneTtl"))


def _past(rt: WorkerRuntime, collection: str, query: dict[str, Any], field: str) -> None:
    rt.run(rt.db[collection].update_many(query, {"$set": {field: now() - timedelta(seconds=1)}}))


def _count(rt: WorkerRuntime, collection: str, query: dict[str, Any]) -> int:
    return rt.run(rt.db[collection].count_documents(query))


def test_idempotency_keys_are_deleted_after_their_day(isolated: WorkerRuntime) -> None:
    rt = isolated
    rt.run(migrate(rt.db))
    keys = IdempotencyRepository(rt.db)
    token = rt.run(keys.reserve("owner", "k", "fingerprint", lease=timedelta(minutes=5)))
    assert token is not None
    record = rt.run(rt.db["idempotency_keys"].find_one({"_id": "owner:k"}))
    assert record is not None
    assert timedelta(hours=23) < record["expires_at"] - now() <= timedelta(hours=24)

    _ttl_pass(rt)
    assert _count(rt, "idempotency_keys", {}) == 1
    _past(rt, "idempotency_keys", {}, "expires_at")
    _ttl_pass(rt)
    assert _count(rt, "idempotency_keys", {}) == 0


def test_an_expired_requests_tombstone_keeps_no_webhook_secret_and_is_purged(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    request_id = seed_request(
        rt,
        [[origin.url("/img/coffee.jpg")]],
        webhook_url="https://hooks.example.com/x",
        status=RequestStatus.COMPLETED,
    )
    _past(rt, "requests", {"_id": request_id}, "expires_at")
    assert rt.run(expire_requests(rt)) == 1

    tombstone = rt.run(rt.db["requests"].find_one({"_id": request_id}))
    assert tombstone is not None
    assert tombstone["status"] == RequestStatus.EXPIRED
    assert "webhook_secret" not in tombstone
    assert "webhook_url" not in tombstone
    _past(rt, "requests", {"_id": request_id}, "purge_at")
    _ttl_pass(rt)
    assert _count(rt, "requests", {"_id": request_id}) == 0


def test_webhook_events_and_deliveries_are_pruned_after_the_log_ttl(
    isolated: WorkerRuntime, origin: Origin
) -> None:
    rt = isolated
    rt.settings = rt.settings.model_copy(update={"webhook_log_ttl_days": 30})
    request_id = seed_request(
        rt,
        [[origin.url("/img/coffee.jpg")]],
        webhook_url="https://hooks.example.com/x",
        status=RequestStatus.COMPLETED,
    )
    event = rt.run(publish_request_event(rt, request_id))
    assert event is not None
    mine = {"request_id": request_id}
    for collection in ("webhook_events", "webhook_deliveries"):
        stored = rt.run(rt.db[collection].find_one(mine))
        assert stored is not None
        assert timedelta(days=29) < stored["expires_at"] - now() <= timedelta(days=30)

    _ttl_pass(rt)
    assert _count(rt, "webhook_events", mine) == _count(rt, "webhook_deliveries", mine) == 1
    for collection in ("webhook_events", "webhook_deliveries"):
        _past(rt, collection, mine, "expires_at")
    _ttl_pass(rt)
    assert _count(rt, "webhook_events", mine) == _count(rt, "webhook_deliveries", mine) == 0
