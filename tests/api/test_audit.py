"""GET /api/requests/{id}/audit: a request's story, from the upload (with the key's name) to its
webhook, through a retry and a cancel, against the real stack with authentication on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from imgbatch.cli.keys import create_key
from imgbatch.cli.stack import Stack
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.stacks import side_api


@pytest.fixture(scope="module")
def secure_url(stack: Stack) -> Iterator[str]:
    with side_api(stack, "api-audit", {"IMGBATCH_AUTH_DISABLED": "false"}) as url:
        yield url


def keyed(stack: Stack, url: str, name: str) -> httpx.Client:
    _, key = asyncio.run(create_key(stack.settings_for_children(), name))
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def trail(api: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/requests/{request_id}/audit")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    # In time order, read as times: a moment on a whole second is written without a fraction
    # ("...:43Z"), which sorts after "...:43.217Z" as text.
    moments = [datetime.fromisoformat(e["at"]) for e in entries]
    assert moments == sorted(moments)
    return entries


def test_the_trail_tells_a_requests_story(stack: Stack, secure_url: str, origin: Origin) -> None:
    rows = [(1, "A", origin.url("/img/rocket.jpg")), (2, "B", origin.url("/img/missing.jpg"))]
    with Receiver() as receiver, keyed(stack, secure_url, "catalog-audit") as api:
        accepted = upload(api, sheet(rows), data={"webhook_url": receiver.url("/hook")})
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        wait_for_status(api, request_id)
        receiver.wait_for(1, "/hook")
        first = _wait_for_events(api, request_id, "webhook.delivered", 1)
        assert [e["event"] for e in first] == [
            "request.uploaded",
            "request.dispatched",
            "image.first_done",
            "request.completed",
            "webhook.delivered",
        ]
        uploaded, dispatched, _, completed, delivered = (e["detail"] for e in first)
        assert uploaded == {
            "key": "catalog-audit",
            "products": 2,
            "images": 2,
            "priority": "normal",
            "profile": "default",
            "webhook": True,
        }
        assert dispatched == {"products": 2}
        assert completed == {"images_done": 1, "images_failed": 1}
        assert delivered["attempts"] == 1 and delivered["status_code"] == 200
        assert delivered["target"] == "request" and delivered["url"] == receiver.url("/hook")

        assert api.post(f"/api/requests/{request_id}/retry").status_code == 202
        wait_for_status(api, request_id)
        again = _wait_for_events(api, request_id, "webhook.delivered", 2)
        assert [e["event"] for e in again[5:]] == [
            "request.retried",
            "request.dispatched",
            "request.completed",
            "webhook.delivered",
        ]
        assert again[5]["detail"] == {"products": 1}

        slow = upload(api, sheet([(1, "Slow", origin.url("/slow/chelsea.jpg?delay=5"))]))
        slow_id = slow.json()["request_id"]
        assert api.post(f"/api/requests/{slow_id}/cancel").status_code == 200
        assert "request.cancelled" in [e["event"] for e in trail(api, slow_id)]

        with keyed(stack, secure_url, "someone-else") as other:
            assert other.get(f"/api/requests/{request_id}/audit").status_code == 404
        assert api.get("/api/requests/nope/audit").status_code == 404
    assert httpx.get(f"{secure_url}/api/requests/{request_id}/audit").status_code == 401


def _wait_for_events(
    api: httpx.Client, request_id: str, event: str, count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        entries = trail(api, request_id)
        if sum(e["event"] == event for e in entries) >= count:
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"{event} x{count} not in {entries}")
        time.sleep(0.2)
