"""Webhook delivery end to end: a real request completes, the real worker signs and sends, beat
schedules the retries, and a real receiver on 127.0.0.1 verifies every arrival with the
``standardwebhooks`` verifier."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.database import Database
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack
from imgbatch.domain.taskqueue import CeleryTaskSender
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.models.requests import RequestRecord, RequestStatus, now
from tests.support.client import wait_for_status
from tests.support.keys import client, new_key
from tests.support.origin import Origin
from tests.support.receiver import Arrival, Receiver, Reply
from tests.support.stacks import side_api
from tests.support.waiting import wait_until
from tests.webhooks.helpers import RETRY_SCHEDULE, complete_request, start_request

COMPLETED_FIELDS = {
    "request_id",
    "status",
    "products_total",
    "images_total",
    "images_done",
    "images_failed",
    "status_url",
    "download_url",
    "results_url",
    "created_at",
    "completed_at",
}


def subscribe(
    api: httpx.Client, url: str, events: tuple[str, ...] = ("request.completed",)
) -> dict[str, Any]:
    response = api.post("/api/webhooks", json={"url": url, "events": list(events)})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def delivery_for(
    api: httpx.Client,
    subscriber_id: str,
    request_id: str,
    states: tuple[str, ...] = ("delivered", "failed"),
    timeout: float = 60.0,
) -> dict[str, Any]:
    """The subscriber's delivery for ``request_id`` once it reaches one of ``states``."""
    found: list[dict[str, Any]] = []

    def reached() -> bool:
        response = api.get(f"/api/webhooks/{subscriber_id}/deliveries")
        assert response.status_code == 200, response.text
        found[:] = [d for d in response.json() if d["request_id"] == request_id]
        assert len(found) <= 1, found
        return bool(found) and found[0]["state"] in states

    wait_until(reached, timeout=timeout, every=0.2, what=f"a delivery in {states}: {found}")
    return found[0]


def verify(arrival: Arrival, secret: str) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(arrival.body, arrival.headers)
    return payload


def for_request(arrivals: list[Arrival], request_id: str) -> list[Arrival]:
    return [a for a in arrivals if json.loads(a.body)["data"]["request_id"] == request_id]


def test_every_delivery_is_signed_per_standard_webhooks(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        subscriber = subscribe(hooks_api, receiver.url("/hook"))
        secret = subscriber["secret"]
        request_id = complete_request(hooks_api, origin)["request_id"]
        delivery = delivery_for(hooks_api, subscriber["id"], request_id)
        assert delivery["state"] == "delivered"
        (arrival,) = receiver.arrivals("/hook")

    assert arrival.method == "POST"
    assert arrival.headers["content-type"] == "application/json"
    assert arrival.headers["webhook-id"] == delivery["event_id"]
    assert abs(int(arrival.headers["webhook-timestamp"]) - time.time()) < 120
    assert arrival.headers["webhook-signature"].startswith("v1,")

    payload = verify(arrival, secret)
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == "request.completed"
    datetime.fromisoformat(payload["timestamp"])
    data = payload["data"]
    assert set(data) == COMPLETED_FIELDS
    assert data["request_id"] == request_id
    assert (data["status"], data["products_total"], data["images_total"]) == ("completed", 1, 1)
    assert (data["images_done"], data["images_failed"]) == (1, 0)
    assert data["completed_at"] is not None
    assert hooks_api.get(data["status_url"]).json()["status"] == "completed"
    assert hooks_api.get(data["download_url"]).status_code == 200
    results = hooks_api.get(data["results_url"])
    assert results.status_code == 200
    assert [json.loads(line)["status"] for line in results.text.splitlines()] == ["done"]

    # What a receiver must refuse: a changed body, a moved timestamp, someone else's secret,
    # and a correctly signed message that is too old to be anything but a replay.
    tampered = arrival.body.replace(b'"images_failed":0', b'"images_failed":1')
    assert tampered != arrival.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, arrival.headers)
    moved = {**arrival.headers, "webhook-timestamp": str(int(time.time()) - 60)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(arrival.body, moved)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(arrival.body, arrival.headers)
    old = datetime.now(UTC) - timedelta(minutes=10)
    replayed = {
        **arrival.headers,
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": Webhook(secret).sign(
            arrival.headers["webhook-id"], old, arrival.body.decode()
        ),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(arrival.body, replayed)


def test_products_finishing_together_send_exactly_one_completed_event(
    hooks_api: httpx.Client, origin: Origin, hooks_db: Database[dict[str, Any]]
) -> None:
    with Receiver() as receiver:
        subscriber = subscribe(hooks_api, receiver.url("/hook"))
        # Small products on two worker processes: the last ones finish at nearly the same time.
        request_id = complete_request(hooks_api, origin, products=8)["request_id"]
        delivery_for(hooks_api, subscriber["id"], request_id, states=("delivered",))
        events = list(hooks_db["webhook_events"].find({"request_id": request_id}))
        deliveries = list(hooks_db["webhook_deliveries"].find({"request_id": request_id}))
        arrivals = for_request(receiver.arrivals("/hook"), request_id)
    assert [e["type"] for e in events] == ["request.completed"]
    assert len(deliveries) == 1
    assert len(arrivals) == 1
    assert verify(arrivals[0], subscriber["secret"])["data"]["products_total"] == 8


def test_500_500_200_arrives_three_times_with_one_id_and_is_delivered(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        receiver.script("/flaky", [500, 500, 200])
        subscriber = subscribe(hooks_api, receiver.url("/flaky"))
        request_id = complete_request(hooks_api, origin)["request_id"]
        delivery = delivery_for(hooks_api, subscriber["id"], request_id)
        arrivals = receiver.arrivals("/flaky")

    assert len(arrivals) == 3
    assert len({a.headers["webhook-id"] for a in arrivals}) == 1
    assert len({a.body for a in arrivals}) == 1  # the same event, byte for byte
    for arrival in arrivals:
        assert verify(arrival, subscriber["secret"])["data"]["request_id"] == request_id
    assert delivery["state"] == "delivered"
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["log"]] == [1, 2, 3]
    assert [a["error"] for a in delivery["log"]] == ["HTTP 500", "HTTP 500", None]
    assert (delivery["last_status_code"], delivery["last_error"]) == (200, None)
    assert delivery["next_attempt_at"] is None
    times = [datetime.fromisoformat(a["at"]) for a in delivery["log"]]
    for earlier, later, step in zip(times[:-1], times[1:], RETRY_SCHEDULE[1:], strict=True):
        assert later - earlier >= timedelta(seconds=step)


def test_a_receiver_down_throughout_fails_the_delivery_then_redeliver_works(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    port = free_port()  # nothing listens here until the receiver "comes back"
    subscriber = subscribe(hooks_api, f"http://127.0.0.1:{port}/hook")
    request_id = complete_request(hooks_api, origin)["request_id"]
    failed = delivery_for(hooks_api, subscriber["id"], request_id)
    assert failed["state"] == "failed"
    assert failed["attempts"] == len(RETRY_SCHEDULE)
    assert failed["next_attempt_at"] is None
    assert failed["last_status_code"] is None
    assert all(a["error"].startswith("connection_error") for a in failed["log"])
    # Still visible later: failed deliveries are kept, not cleaned up.
    assert delivery_for(hooks_api, subscriber["id"], request_id, states=("failed",)) == failed

    with Receiver(port) as receiver:
        redelivered = hooks_api.post(f"/api/webhooks/deliveries/{failed['id']}/redeliver")
        assert redelivered.status_code == 202, redelivered.text
        assert redelivered.json()["state"] == "pending"
        (arrival,) = receiver.wait_for(1, "/hook")
        delivered = delivery_for(hooks_api, subscriber["id"], request_id, states=("delivered",))
    assert arrival.headers["webhook-id"] == failed["event_id"]
    assert verify(arrival, subscriber["secret"])["data"]["request_id"] == request_id
    assert delivered["attempts"] == len(RETRY_SCHEDULE) + 1
    assert delivered["log"][-1]["status_code"] == 200


def test_410_gone_disables_the_subscriber(hooks_api: httpx.Client, origin: Origin) -> None:
    with Receiver() as receiver:
        receiver.script("/gone", [410, 410, 410])
        gone = subscribe(hooks_api, receiver.url("/gone"))
        control = subscribe(hooks_api, receiver.url("/control"))
        first = complete_request(hooks_api, origin)["request_id"]
        delivery = delivery_for(hooks_api, gone["id"], first)
        assert delivery["state"] == "failed"
        assert (delivery["attempts"], delivery["last_status_code"]) == (1, 410)
        assert delivery["last_error"] == "HTTP 410"

        shown = hooks_api.get(f"/api/webhooks/{gone['id']}").json()
        assert shown["disabled_at"] is not None
        assert "410" in shown["disabled_reason"]
        refused = hooks_api.post(f"/api/webhooks/deliveries/{delivery['id']}/redeliver")
        assert refused.status_code == 409

        # The next event reaches the control subscriber, and nothing is sent to the disabled one.
        second = complete_request(hooks_api, origin)["request_id"]
        delivery_for(hooks_api, control["id"], second, states=("delivered",))
        gone_deliveries = hooks_api.get(f"/api/webhooks/{gone['id']}/deliveries").json()
        assert [d["request_id"] for d in gone_deliveries] == [first]
        assert len(receiver.arrivals("/gone")) == 1


def test_retry_after_on_429_is_honoured(hooks_api: httpx.Client, origin: Origin) -> None:
    with Receiver() as receiver:
        receiver.script("/busy", [Reply(429, {"Retry-After": "3"}), 200])
        subscriber = subscribe(hooks_api, receiver.url("/busy"))
        request_id = complete_request(hooks_api, origin)["request_id"]
        delivery = delivery_for(hooks_api, subscriber["id"], request_id)
    assert delivery["state"] == "delivered"
    assert [a["status_code"] for a in delivery["log"]] == [429, 200]
    first, second = (datetime.fromisoformat(a["at"]) for a in delivery["log"])
    # The schedule alone would retry after 1 s; the receiver asked for 3.
    assert second - first >= timedelta(seconds=3)


def test_an_attempt_is_recorded_whatever_retry_after_says(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        receiver.script("/odd", [Reply(503, {"Retry-After": "\u00b2"}), 200])
        subscriber = subscribe(hooks_api, receiver.url("/odd"))
        request_id = complete_request(hooks_api, origin)["request_id"]
        delivery = delivery_for(hooks_api, subscriber["id"], request_id)
        assert len(receiver.arrivals("/odd")) == 2
    # The odd hint is no hint: the 503 is recorded and retried on the schedule, once.
    assert delivery["state"] == "delivered"
    assert [a["status_code"] for a in delivery["log"]] == [503, 200]
    assert delivery["attempts"] == 2


def test_rotation_sends_both_signatures_during_the_overlap(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        subscriber = subscribe(hooks_api, receiver.url("/hook"))
        old_secret = subscriber["secret"]
        rotated = hooks_api.post(f"/api/webhooks/{subscriber['id']}/rotate-secret")
        new_secret_ = rotated.json()["secret"]
        request_id = complete_request(hooks_api, origin)["request_id"]
        delivery_for(hooks_api, subscriber["id"], request_id, states=("delivered",))
        (arrival,) = receiver.arrivals("/hook")

    signatures = arrival.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    # A receiver on either secret accepts the delivery...
    assert verify(arrival, new_secret_)["data"]["request_id"] == request_id
    assert verify(arrival, old_secret)["data"]["request_id"] == request_id
    # ...and each signature is the one of its own secret: new first, then the old one.
    for signature, right, wrong in (
        (signatures[0], new_secret_, old_secret),
        (signatures[1], old_secret, new_secret_),
    ):
        alone = {**arrival.headers, "webhook-signature": signature}
        Webhook(right).verify(arrival.body, alone)
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong).verify(arrival.body, alone)
    assert len(base64.b64decode(signatures[0][3:])) == 32  # HMAC-SHA256


def test_per_request_webhook_is_signed_with_the_upload_secret_and_shown_in_status(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        receiver.script("/mine", [503, 200])
        accepted = start_request(hooks_api, origin, webhook_url=receiver.url("/mine"))
        secret = accepted["webhook_secret"]
        assert secret.startswith("whsec_")
        request_id = accepted["request_id"]
        wait_for_status(hooks_api, request_id)
        receiver.wait_for(2, "/mine")
        status = _wait_for_webhook_state(hooks_api, request_id, "delivered")
        arrivals = receiver.arrivals("/mine")

    assert [verify(a, secret)["data"]["request_id"] for a in arrivals] == [request_id] * 2
    webhook = status["webhook"]
    assert set(webhook) >= {
        "url",
        "state",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
    }
    assert webhook["url"] == receiver.url("/mine")
    assert (webhook["state"], webhook["attempts"]) == ("delivered", 2)
    assert (webhook["last_status_code"], webhook["last_error"]) == (200, None)
    assert webhook["next_attempt_at"] is None
    assert [a["status_code"] for a in webhook["log"]] == [503, 200]
    assert secret not in json.dumps(status)

    plain = complete_request(hooks_api, origin)
    assert plain["webhook_secret"] is None
    assert hooks_api.get(f"/api/status/{plain['request_id']}").json()["webhook"] is None


def _wait_for_webhook_state(
    api: httpx.Client, request_id: str, state: str, timeout: float = 60.0
) -> dict[str, Any]:
    status: dict[str, Any] = {}

    def reached() -> bool:
        status.update(api.get(f"/api/status/{request_id}").json())
        return bool(status["webhook"]) and status["webhook"]["state"] == state

    wait_until(reached, timeout=timeout, every=0.2, what=f"the webhook of {request_id}: {state}")
    return status


def test_a_request_that_fails_sends_request_failed_with_the_reason(
    hooks_api: httpx.Client, hooks_stack: Stack, hooks_db: Database[dict[str, Any]]
) -> None:
    with Receiver() as receiver:
        failures = subscribe(hooks_api, receiver.url("/failures"), events=("request.failed",))
        completions = subscribe(hooks_api, receiver.url("/completions"))
        # A request whose staged rows are gone (never written, or lost): dispatching it can only
        # fail it.
        request_id = uuid.uuid4().hex
        secret = new_secret()
        created = now()
        hooks_db["requests"].insert_one(
            RequestRecord(
                id=request_id,
                owner="local",
                status=RequestStatus.PENDING,
                columns=[("S. No.", "serial"), ("Product Name", "name"), ("Urls", "urls")],
                products_total=1,
                images_total=1,
                webhook_url=receiver.url("/mine"),
                webhook_secret=secret,
                created_at=created,
                updated_at=created,
            ).to_document()
        )
        asyncio.run(
            CeleryTaskSender.from_settings(hooks_stack.settings_for_children()).dispatch(request_id)
        )
        status = wait_for_status(hooks_api, request_id)
        assert status["status"] == "failed"
        assert "missing" in status["failure_reason"]
        (mine,) = receiver.wait_for(1, "/mine")
        delivery_for(hooks_api, failures["id"], request_id, states=("delivered",))
        (theirs,) = receiver.arrivals("/failures")
        assert receiver.arrivals("/completions") == []
        assert hooks_api.get(f"/api/webhooks/{completions['id']}/deliveries").json() == []

    payload = verify(mine, secret)
    assert payload == verify(theirs, failures["secret"])
    assert payload["type"] == "request.failed"
    data = payload["data"]
    assert data["request_id"] == request_id
    assert data["status"] == "failed"
    assert data["reason"] == status["failure_reason"]
    assert data["download_url"] is None
    assert set(data) == COMPLETED_FIELDS | {"reason"}


def test_a_hanging_receiver_does_not_hold_up_image_processing(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        receiver.script("/hang", [Reply(hang=True)])
        first = complete_request(hooks_api, origin, webhook_url=receiver.url("/hang"))
        receiver.wait_for(1, "/hang")  # its delivery is now stuck waiting for an answer
        # Another request, with more products than the worker has processes, runs to the end
        # while that attempt is still in flight.
        second = complete_request(hooks_api, origin, products=4)
        hanging = hooks_api.get(f"/api/status/{first['request_id']}").json()["webhook"]
        assert (hanging["state"], hanging["attempts"]) == ("pending", 0)
        assert second["request_id"] != first["request_id"]


def test_a_tenants_hanging_subscribers_do_not_hold_up_another_tenants_webhook(
    hooks_stack: Stack, origin: Origin
) -> None:
    with (
        side_api(hooks_stack, "api-tenants", {"IMGBATCH_AUTH_DISABLED": "false"}) as url,
        Receiver() as black_hole,
        Receiver() as receiver,
    ):
        black_hole.script("/hook", [Reply(hang=True)] * 100)
        _, key_a = new_key(hooks_stack, "tenant-a")
        _, key_b = new_key(hooks_stack, "tenant-b")
        with client(url, key_a) as tenant_a, client(url, key_b) as tenant_b:
            for _ in range(20):
                subscribe(tenant_a, black_hole.url("/hook"))
            mine = subscribe(tenant_b, receiver.url("/hook"))
            complete_request(tenant_a, origin)
            black_hole.wait_for(1, "/hook")  # tenant A's deliveries now hang, 10 s each
            request_id = complete_request(tenant_b, origin)["request_id"]
            delivery = delivery_for(tenant_b, mine["id"], request_id, ("delivered",), timeout=30)
    took = datetime.fromisoformat(delivery["delivered_at"]) - datetime.fromisoformat(
        delivery["created_at"]
    )
    assert took < timedelta(seconds=5), took
