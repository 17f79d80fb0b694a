"""Webhook code run in this process against the real MongoDB-protocol server, Redis and a real
receiver, where the end-to-end stack cannot reach: racing completions, notices delivered twice,
the address guard with private networks refused, timeouts and redirects."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from imgbatch.domain.taskqueue import REQUEST_FINISHED_TASK, WEBHOOK_DELIVER_TASK, WEBHOOKS_QUEUE
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.models.db import WEBHOOK_DELIVERIES, WEBHOOK_EVENTS
from imgbatch.models.requests import RequestStatus, now
from imgbatch.models.webhooks import (
    DeliveryRecord,
    DeliveryState,
    EventType,
    SubscriberRecord,
    WebhookDeliveryRepository,
    WebhookSubscriberRepository,
    new_id,
)
from imgbatch.webhooks.delivery import deliver, retry_after_seconds, retry_delay
from imgbatch.webhooks.events import publish_request_event
from imgbatch.webhooks.scheduling import attempt_over, enqueue_due
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.origin import Origin
from tests.support.receiver import Receiver, Reply
from tests.support.seeding import seed_request
from tests.webhooks.helpers import Runtime


def _queued_tasks(runtime: Runtime) -> list[str]:
    messages = runtime.broker.lrange(WEBHOOKS_QUEUE, 0, -1)
    return [json.loads(m)["headers"]["task"] for m in messages]


def _count(rt: WorkerRuntime, collection: str, **query: object) -> int:
    return rt.run(rt.db[collection].count_documents(query))


def test_racing_last_products_publish_exactly_one_completed_event(
    isolated: Runtime, origin: Origin
) -> None:
    # Five requests of one owner whose deliveries are never attempted: the per-owner cap on
    # deliveries in flight (another test's subject) would hold back the later ones.
    rt = isolated.configure(webhook_owner_concurrency=5)
    url = origin.url("/img/coffee.jpg")
    hook = "https://hooks.example.com/imgbatch"
    for _ in range(5):
        request_id = seed_request(rt, [[url], [url], [url]], webhook_url=hook)
        rt.run(dispatch_request(rt, request_id))

        async def race(request_id: str) -> None:
            # Every product twice, all at once: the last finishers race for completion.
            await asyncio.gather(
                *(process_products(rt, request_id, [s]) for s in (1, 2, 3, 1, 2, 3))
            )

        rt.run(race(request_id))
        assert _queued_tasks(isolated).count(REQUEST_FINISHED_TASK) == 1

        async def notice_twice(request_id: str) -> None:
            # The notice task redelivered (late acknowledgement) and both copies run at once.
            await asyncio.gather(*(publish_request_event(rt, request_id) for _ in range(2)))

        rt.run(notice_twice(request_id))
        rt.run(publish_request_event(rt, request_id))
        assert _count(rt, WEBHOOK_EVENTS, request_id=request_id) == 1
        assert _count(rt, WEBHOOK_DELIVERIES, request_id=request_id) == 1
        assert _queued_tasks(isolated).count(WEBHOOK_DELIVER_TASK) == 1
        isolated.broker.delete(WEBHOOKS_QUEUE)


def test_a_request_not_yet_finished_publishes_nothing(isolated: Runtime) -> None:
    rt = isolated.rt
    request_id = seed_request(
        rt, [["https://images.example.com/a.jpg"]], status=RequestStatus.PENDING
    )
    assert rt.run(publish_request_event(rt, request_id)) is None
    assert rt.run(publish_request_event(rt, "no-such-request")) is None
    assert _count(rt, WEBHOOK_EVENTS, request_id=request_id) == 0


def _one_delivery(rt: WorkerRuntime, url: str) -> DeliveryRecord:
    request_id = seed_request(
        rt, [["https://images.example.com/a.jpg"]], webhook_url=url, status=RequestStatus.COMPLETED
    )
    event = rt.run(publish_request_event(rt, request_id))
    assert event is not None
    delivery = rt.run(WebhookDeliveryRepository(rt.db).for_request_target(request_id))
    assert delivery is not None
    return delivery


def test_the_address_guard_refuses_a_private_receiver_at_delivery_time(
    isolated: Runtime,
) -> None:
    rt = isolated.configure(allow_private_networks=False, allowed_ports=[])
    with Receiver() as receiver:
        delivery = _one_delivery(rt, receiver.url("/hook"))
        attempted = rt.run(deliver(rt, delivery.id))
        assert attempted is not None
        assert receiver.connections == 0
        assert receiver.arrivals() == []
    assert attempted.attempts == 1
    assert attempted.last_status_code is None
    assert attempted.last_error is not None
    assert attempted.last_error.startswith("blocked_address")
    assert "127.0.0.1" in attempted.last_error
    assert attempted.state == DeliveryState.PENDING  # retried on the schedule, like any failure


def test_the_same_receiver_is_reached_when_private_networks_are_allowed(
    isolated: Runtime,
) -> None:
    rt = isolated.configure(allow_private_networks=True, allowed_ports=[])
    with Receiver() as receiver:
        delivery = _one_delivery(rt, receiver.url("/hook"))
        delivered = rt.run(deliver(rt, delivery.id))
        assert receiver.connections == 1
    assert delivered is not None
    assert (delivered.state, delivered.last_status_code) == (DeliveryState.DELIVERED, 200)
    # Claimed and done: running the task again (a duplicate message) sends nothing.
    assert rt.run(deliver(rt, delivery.id)) is None


def test_a_receiver_that_does_not_answer_in_time_is_a_timeout(isolated: Runtime) -> None:
    rt = isolated.configure(webhook_timeout=1.0)
    with Receiver() as receiver:
        receiver.script("/slow", [Reply(hang=True)])
        delivery = _one_delivery(rt, receiver.url("/slow"))
        attempted = rt.run(deliver(rt, delivery.id))
    assert attempted is not None
    assert attempted.last_error == "timeout: no response within 1s"
    assert attempted.state == DeliveryState.PENDING
    assert attempted.next_attempt_at is not None


def test_redirects_are_not_followed(isolated: Runtime) -> None:
    rt = isolated.rt
    with Receiver() as receiver:
        receiver.script("/moved", [Reply(302, {"Location": receiver.url("/elsewhere")})])
        delivery = _one_delivery(rt, receiver.url("/moved"))
        attempted = rt.run(deliver(rt, delivery.id))
        assert receiver.arrivals("/elsewhere") == []
    assert attempted is not None
    assert attempted.last_status_code == 302
    assert attempted.last_error == "HTTP 302: redirects are not followed"
    assert attempted.state == DeliveryState.PENDING


def test_a_delivery_in_flight_cannot_be_claimed_twice(isolated: Runtime) -> None:
    rt = isolated.rt
    with Receiver() as receiver:
        receiver.script("/hook", [Reply(hang=True)])
        delivery = _one_delivery(rt, receiver.url("/hook"))
        deliveries = WebhookDeliveryRepository(rt.db)
        claimed = rt.run(deliveries.claim(delivery.id, lease=timedelta(seconds=30)))
        assert claimed is not None
        # A second message for it (the poller's, say) finds it leased and does nothing.
        assert rt.run(deliver(rt, delivery.id)) is None
        assert receiver.arrivals() == []
        isolated.broker.delete(WEBHOOKS_QUEUE)
        assert rt.run(enqueue_due(rt)) == 0


def test_the_poller_queues_due_deliveries_once(isolated: Runtime) -> None:
    rt = isolated.rt
    delivery = _one_delivery(rt, "https://hooks.example.com/x")
    # publish queued it already; the poller does not queue it again while that message waits.
    assert _queued_tasks(isolated) == [WEBHOOK_DELIVER_TASK]
    assert rt.run(enqueue_due(rt)) == 0
    rt.run(
        rt.db[WEBHOOK_DELIVERIES].update_one(
            {"_id": delivery.id}, {"$set": {"queued_until": now() - timedelta(seconds=1)}}
        )
    )
    # Once the hold has passed, the message is presumed lost and queued again.
    assert rt.run(enqueue_due(rt)) == 1


def test_a_deleted_subscriber_fails_its_pending_delivery_without_sending(
    isolated: Runtime,
) -> None:
    rt = isolated.rt
    subscribers = WebhookSubscriberRepository(rt.db)
    stamp = now()
    with Receiver() as receiver:
        subscriber = SubscriberRecord(
            id=new_id("wh"),
            owner="local",
            url=receiver.url("/hook"),
            events=[EventType.REQUEST_COMPLETED],
            secret=new_secret(),
            created_at=stamp,
            updated_at=stamp,
        )
        rt.run(subscribers.create(subscriber))
        request_id = seed_request(
            rt, [["https://images.example.com/a.jpg"]], status=RequestStatus.COMPLETED
        )
        rt.run(publish_request_event(rt, request_id))
        (delivery_id,) = [
            d["_id"]
            for d in rt.run(rt.db[WEBHOOK_DELIVERIES].find({"request_id": request_id}).to_list())
        ]
        assert rt.run(subscribers.get(subscriber.id, owner="someone-else")) is None
        assert rt.run(subscribers.delete(subscriber.id, owner="someone-else")) is False
        assert rt.run(subscribers.delete(subscriber.id, owner="local")) is True
        result = rt.run(deliver(rt, delivery_id))
        assert receiver.connections == 0
    assert result is not None
    assert (result.state, result.last_error) == (DeliveryState.FAILED, "the subscriber was deleted")


def test_retry_delays_follow_the_schedule_and_retry_after() -> None:
    schedule = [0.0, 5.0, 300.0, 1800.0]
    assert [retry_delay(schedule, n, None) for n in (1, 2, 3)] == [5.0, 300.0, 1800.0]
    assert retry_delay(schedule, 1, 120.0) == 120.0  # the receiver asked for longer
    assert retry_delay(schedule, 2, 1.0) == 300.0  # never sooner than the schedule
    assert retry_delay(schedule, 1, 10 * 24 * 3600.0) == 24 * 3600.0  # capped at a day
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    later = datetime.now(UTC) + timedelta(seconds=90)
    parsed = retry_after_seconds(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert parsed is not None
    assert 80 <= parsed <= 90


@pytest.mark.parametrize("attempts", [1, 2])
def test_redelivery_adds_exactly_one_attempt_to_a_failed_delivery(
    isolated: Runtime, attempts: int
) -> None:
    rt = isolated.configure(webhook_retry_schedule=[0.0] * attempts)
    with Receiver() as receiver:
        receiver.script("/hook", [500] * (attempts + 1))
        delivery = _one_delivery(rt, receiver.url("/hook"))
        for _ in range(attempts):
            rt.run(deliver(rt, delivery.id))
        deliveries = WebhookDeliveryRepository(rt.db)
        failed = rt.run(deliveries.get(delivery.id))
        assert failed is not None
        assert (failed.state, failed.attempts) == (DeliveryState.FAILED, attempts)
        assert rt.run(deliveries.rearm(delivery.id, owner="someone-else")) is None
        assert rt.run(deliveries.rearm(delivery.id, owner="local")) is not None
        again = rt.run(deliver(rt, delivery.id))
        assert len(receiver.arrivals("/hook")) == attempts + 1
    assert again is not None
    assert (again.state, again.attempts) == (DeliveryState.FAILED, attempts + 1)


def test_the_poller_gives_each_owner_its_share_and_no_more(isolated: Runtime) -> None:
    rt = isolated.configure(webhook_owner_concurrency=2)
    subscribers = WebhookSubscriberRepository(rt.db)
    stamp = now()
    for owner, count in (("busy", 5), ("quiet", 1)):
        for _ in range(count):
            rt.run(
                subscribers.create(
                    SubscriberRecord(
                        id=new_id("wh"),
                        owner=owner,
                        url="https://hooks.example.com/x",
                        events=[EventType.REQUEST_COMPLETED],
                        secret=new_secret(),
                        created_at=stamp,
                        updated_at=stamp,
                    )
                )
            )
        request_id = seed_request(
            rt, [["https://images.example.com/a.jpg"]], status=RequestStatus.COMPLETED
        )
        rt.run(rt.db["requests"].update_one({"_id": request_id}, {"$set": {"owner": owner}}))
        rt.run(publish_request_event(rt, request_id))

    def queued_by_owner() -> dict[str, int]:
        queued = rt.db[WEBHOOK_DELIVERIES].find(
            {"state": DeliveryState.PENDING, "queued_until": {"$gt": now()}}
        )
        return dict(Counter(doc["owner"] for doc in rt.run(queued.to_list())))

    # The busy owner's fan-out queued two of its five; the rest wait in MongoDB, not in Redis.
    assert queued_by_owner() == {"busy": 2, "quiet": 1}
    assert rt.run(enqueue_due(rt)) == 0
    # One of the busy owner's attempts is over: the next poll queues one more of its, no more.
    over = next(
        d["_id"]
        for d in rt.run(rt.db[WEBHOOK_DELIVERIES].find({"owner": "busy"}).to_list())
        if d["queued_until"] > now()
    )
    rt.run(
        rt.db[WEBHOOK_DELIVERIES].update_one(
            {"_id": over}, {"$set": {"state": DeliveryState.DELIVERED}}
        )
    )
    rt.run(attempt_over(rt, over))
    assert rt.run(enqueue_due(rt)) == 1
    assert queued_by_owner() == {"busy": 2, "quiet": 1}
