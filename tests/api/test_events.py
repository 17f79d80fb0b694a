"""GET /api/requests/{id}/events: live progress from the real stack, resume on another API
process, tenancy, the MongoDB safety net, keep-alive and lifetime, and 200 subscribers."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from httpx_sse import connect_sse
from pymongo.database import Database

from imgbatch.cli.stack import Stack
from imgbatch.models.requests import RequestStatus
from tests.conftest import KEYED_ENV, KeyedApi
from tests.support.client import sheet, upload, wait_for_status
from tests.support.events import (
    Event,
    events_path,
    follow,
    parse,
    read_stream,
    watch_together,
)
from tests.support.keys import new_key
from tests.support.origin import Origin
from tests.support.seeding import seed_request, stack_runtime
from tests.support.stacks import side_api


def _cursor(event: Event) -> tuple[int, int, int]:
    epoch, rank, finished, _ = (int(part) for part in event.id.split("."))
    return epoch, rank, finished


def _products(events: list[Event]) -> dict[int, dict[str, Any]]:
    return {e.data["serial_number"]: e.data for e in events if e.event == "product"}


def test_a_stream_follows_a_request_to_its_final_event(api: httpx.Client, origin: Origin) -> None:
    gate = uuid.uuid4().hex
    rows = [
        (1, "Fine", origin.url("/img/rocket.jpg")),
        (2, "Held", origin.url(f"/gate/{gate}/coffee.jpg")),
        (3, "Broken", origin.url("/status/404")),
    ]
    request_id = upload(api, sheet(rows)).json()["request_id"]
    events: list[Event] = []
    with connect_sse(api, "GET", events_path(request_id), timeout=60) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if (event := parse(sse)) is None:
                continue
            events.append(event)
            if {1, 3} <= _products(events).keys():
                origin.open_gate(gate)  # the last product may finish now
    assert all(e.id for e in events)
    assert [e.event for e in events[:2]] == ["progress", "status"]
    final = events[-1]
    assert final.event == "completed"  # and the server closed the stream after it
    assert final.data["request_id"] == request_id
    assert (final.data["images_done"], final.data["images_failed"]) == (2, 1)
    assert final.data["progress"] == 100
    assert final.data["completed_at"]
    products = _products(events)
    assert products[1]["status"] == "completed"
    assert httpx.get(products[1]["output_image_urls"][0]).content[:3] == b"\xff\xd8\xff"
    assert products[2]["status"] == "completed"
    assert products[3]["status"] == "failed"
    assert products[3]["output_image_urls"] == [None]
    assert products[3]["errors"][0]["code"] == "http_error"
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses[-2:] == ["in_progress", "completed"]
    progress = [e.data for e in events if e.event == "progress"]
    assert progress[-1] == {
        "progress": 100,
        "products_done": 3,
        "products_total": 3,
        "images_done": 2,
        "images_failed": 1,
        "images_total": 3,
    }
    # Ids are cursors into the request's life: they never go backwards within a stream.
    cursors = [_cursor(e) for e in events]
    assert cursors == sorted(cursors)


def test_a_stream_opened_after_the_end_gets_the_final_state_at_once(
    api: httpx.Client, origin: Origin
) -> None:
    request_id = upload(api, sheet([(1, "One", origin.url("/img/rocket.jpg"))])).json()[
        "request_id"
    ]
    wait_for_status(api, request_id)
    events = read_stream(api, request_id)
    assert [e.event for e in events] == ["progress", "status", "completed"]
    assert events[1].data == {"status": "completed", "failure_reason": None}
    # Resuming from the final event repeats it: a client never misses it.
    again = read_stream(api, request_id, last_event_id=events[-1].id)
    assert [e.event for e in again] == ["completed"]


def test_reconnecting_to_another_api_process_resumes_with_last_event_id(
    stack: Stack, keyed_api: KeyedApi, origin: Origin
) -> None:
    # Every image held by the origin: the first is let go only once a stream is open, so its
    # product event is one this stream sees (a product done before anyone subscribed is only
    # a count in the first progress event, never replayed).
    first_gate, gate = uuid.uuid4().hex, uuid.uuid4().hex
    rows = [(1, "Fine", origin.url(f"/gate/{first_gate}/rocket.jpg"))] + [
        (n, f"Held {n}", origin.url(f"/gate/{gate}/coffee.jpg")) for n in (2, 3)
    ]
    with keyed_api.client() as first:
        request_id = upload(first, sheet(rows)).json()["request_id"]
        before: list[Event] = []
        with connect_sse(first, "GET", events_path(request_id)) as source:
            for sse in source.iter_sse():
                event = parse(sse)
                if event is None:
                    continue
                before.append(event)
                origin.open_gate(first_gate)
                if event.event == "product":
                    break
        # keyed_api's streams end after 5 s: on a busy machine the product can come later, so
        # resume (as a client does) until it arrives; two minutes at most.
        for _ in range(24):
            if _products(before):
                break
            before += read_stream(first, request_id, last_event_id=before[-1].id, until="product")
    assert _products(before).keys() == {1}
    origin.open_gate(gate)
    with (
        side_api(stack, "api-keyed-b", KEYED_ENV) as other_url,
        KeyedApi(other_url, keyed_api.key).client() as second,
    ):
        # From the first process's cursor, and on across this one's 5 s streams until the end.
        after: list[Event] = []
        for _ in range(24):
            after += read_stream(second, request_id, last_event_id=(after or before)[-1].id)
            if after and after[-1].event == "completed":
                break
    assert after[-1].event == "completed"
    assert {1, 2, 3} == (_products(before) | _products(after)).keys()
    # Only what changed since the cursor: the status it had already seen is not sent again.
    assert [e.data["status"] for e in after if e.event == "status"] == ["completed"]


def test_streams_are_tenant_scoped_and_expired_requests_are_gone(
    stack: Stack, keyed_api: KeyedApi, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    _, other_key = new_key(stack, "events-stranger")
    with keyed_api.client() as owner, keyed_api.client(other_key) as stranger:
        request_id = upload(owner, sheet([(1, "A", origin.url("/img/rocket.jpg"))])).json()[
            "request_id"
        ]
        wait_for_status(owner, request_id)
        response = stranger.get(events_path(request_id))
        assert response.status_code == 404
        assert response.json() == {"detail": f"request {request_id} not found"}
        assert httpx.get(keyed_api.url + events_path(request_id)).status_code == 401
        mongo["requests"].update_one(
            {"_id": request_id}, {"$set": {"status": RequestStatus.EXPIRED}}
        )
        assert owner.get(events_path(request_id)).status_code == 410


def test_the_final_state_arrives_even_when_no_notice_is_published(
    stack: Stack, api: httpx.Client, mongo: Database[dict[str, Any]]
) -> None:
    # A request moved to its final state behind pub/sub's back (as if the notice was dropped):
    # only the stream's own reads of MongoDB can see it.
    with stack_runtime(stack) as rt:
        request_id = seed_request(rt, [["https://images.example.com/a.jpg"]])
    events: list[Event] = []
    with connect_sse(api, "GET", events_path(request_id), timeout=60) as source:
        for sse in source.iter_sse():
            if (event := parse(sse)) is None:
                continue
            events.append(event)
            if event.data == {"status": "pending", "failure_reason": None}:
                mongo["requests"].update_one(
                    {"_id": request_id},
                    {"$set": {"status": RequestStatus.CANCELLED, "updated_at": datetime.now(UTC)}},
                )
    assert [e.event for e in events] == ["progress", "status", "status", "cancelled"]
    assert events[2].data["status"] == "cancelled"


def test_keep_alive_comments_and_a_bounded_lifetime(keyed_api: KeyedApi, origin: Origin) -> None:
    gate = uuid.uuid4().hex
    with keyed_api.client() as client:
        request_id = upload(client, sheet([(1, "Held", origin.url(f"/gate/{gate}/rocket.jpg"))]))
        request_id = request_id.json()["request_id"]
        comments, names = [], []
        started = time.monotonic()
        try:
            with client.stream("GET", events_path(request_id), timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith(":"):
                        comments.append(line)
                    elif line.startswith("event:"):
                        names.append(line.removeprefix("event:").strip())
            lifetime = time.monotonic() - started
        finally:
            origin.open_gate(gate)
        # KEYED_ENV: a comment every second, closed after 5 s without a final event.
        assert sum(c.startswith(": ping") for c in comments) >= 3
        assert 4.5 <= lifetime < 20
        assert "progress" in names
        assert not set(names) & {"completed", "failed", "cancelled"}
        events, _ = follow(client, request_id)
        assert events[-1].event == "completed"


def test_two_hundred_subscribers_get_the_final_event_within_a_second(
    api: httpx.Client, origin: Origin
) -> None:
    gate = uuid.uuid4().hex
    request_id = upload(api, sheet([(1, "Held", origin.url(f"/gate/{gate}/rocket.jpg"))]))
    request_id = request_id.json()["request_id"]
    watched = asyncio.run(
        # Every subscriber is listening before the gate lets the request finish.
        watch_together(
            str(api.base_url), request_id, 200, when_listening=lambda: origin.open_gate(gate)
        )
    )
    status = wait_for_status(api, request_id)
    completed_at = datetime.fromisoformat(status["completed_at"]).timestamp()
    assert [w.final_event for w in watched] == ["completed"] * 200
    lags = sorted(w.final_at - completed_at for w in watched)
    # Server clock (completed_at) against the receiving clock: the same machine.
    assert lags[-1] < 1.0, f"slowest subscriber got the final event {lags[-1]:.3f}s late"
