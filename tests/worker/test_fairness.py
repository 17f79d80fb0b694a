"""Fairness: a small request is not starved by a big batch uploaded before it."""

from __future__ import annotations

import httpx

from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin


def test_a_small_request_overtakes_the_tail_of_a_big_batch(
    api: httpx.Client, origin: Origin
) -> None:
    # 300 slow products: 38 tasks of 8, about 20 s for the suite's 2 worker processes.
    big = [(i, f"Bulk {i}", origin.url(f"/slow/rocket.jpg?delay=1&i={i}")) for i in range(1, 301)]
    big_id = upload(api, sheet(big)).json()["request_id"]
    wait_for_status(api, big_id, ("in_progress",))
    small = upload(api, sheet([(1, "Urgent", origin.url("/img/chelsea.jpg"))]))
    assert small.status_code == 202

    wait_for_status(api, small.json()["request_id"], ("completed",))
    # FIFO would have put the small request behind all 300 slow products.
    behind = api.get(f"/api/status/{big_id}", params={"limit": 1}).json()
    assert behind["status"] == "in_progress"
    assert behind["products_done"] < 200
    wait_for_status(api, big_id, ("completed",))


def test_priority_is_a_validated_upload_field(api: httpx.Client, origin: Origin) -> None:
    body = sheet([(1, "A", origin.url("/img/coffee.jpg"))])
    high = upload(api, body, data={"priority": "high"})
    assert high.status_code == 202
    assert wait_for_status(api, high.json()["request_id"])["status"] == "completed"
    refused = upload(api, body, data={"priority": "urgent"})
    assert refused.status_code == 422
    assert "priority" in str(refused.json()["detail"])
