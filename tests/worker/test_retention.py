"""Retention with shared outputs: expiring one request never breaks a URL another one reuses;
the outputs go when the last request holding them does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from imgbatch.cli.stack import Stack
from imgbatch.worker.retention import expire_requests
from imgbatch.worker.runtime import WorkerRuntime, build_runtime
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.waiting import wait_until


@pytest.fixture
def sweeper(stack: Stack) -> Iterator[WorkerRuntime]:
    """The retention task's code, run here against the stack's database and media."""
    rt = build_runtime(
        stack.settings_for_children().model_copy(update={"data_dir": stack.data_dir})
    )
    try:
        yield rt
    finally:
        rt.run(rt.client.close())
        rt.loop.close()


def _expire(mongo: Database[dict[str, Any]], sweeper: WorkerRuntime, request_id: str) -> None:
    mongo["requests"].update_one(
        {"_id": request_id}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    assert sweeper.run(expire_requests(sweeper)) >= 1


def _urls(status: dict[str, Any]) -> list[str]:
    image = status["products"][0]["images"][0]
    return [variant["url"] for variant in image["variants"].values()]


def test_expiring_one_request_keeps_the_outputs_another_reuses(
    api: httpx.Client,
    origin: Origin,
    mongo: Database[dict[str, Any]],
    sweeper: WorkerRuntime,
) -> None:
    url = origin.url(f"/unique/coffee.jpg?t={uuid.uuid4().hex}")
    body = sheet([(1, "Mug", url)])
    first = upload(api, body, data={"profile": "storefront"}).json()["request_id"]
    first_status = wait_for_status(api, first)
    second = upload(api, body, data={"profile": "storefront"}).json()["request_id"]
    second_status = wait_for_status(api, second)
    assert second_status["products"][0]["images"][0]["reused"] == "not_modified"
    shared = _urls(second_status)
    assert shared == _urls(first_status) and len(shared) == 4
    # A third reuses them too and is cancelled while another of its products is still slow.
    slow = origin.url(f"/slow/rocket.jpg?delay=3&t={uuid.uuid4().hex}")
    third = upload(
        api, sheet([(1, "Mug", url), (2, "Slow", slow)]), data={"profile": "storefront"}
    ).json()["request_id"]

    # Its first product done (and so holding the outputs), its second still downloading: a
    # cancel before the first is done would leave nothing held by this request to test.
    def first_done() -> bool:
        doc = mongo["products"].find_one({"request_id": third, "serial_number": 1}) or {}
        return doc.get("status") == "completed"

    wait_until(first_done, what="the third request's first product")
    assert api.post(f"/api/requests/{third}/cancel").status_code == 200
    assert all(httpx.get(output).status_code == 200 for output in shared)

    _expire(mongo, sweeper, first)

    assert api.get(f"/api/status/{first}").status_code == 410
    for output in shared:
        assert httpx.get(output).status_code == 200, output
    media_id = mongo["products"].find_one({"request_id": second})["images"][0]["media_id"]
    assert second in mongo["media"].find_one({"_id": media_id})["holders"]

    _expire(mongo, sweeper, second)
    assert all(httpx.get(output).status_code == 200 for output in shared)
    _expire(mongo, sweeper, third)

    # The last holder is gone: so are the outputs and their record.
    assert all(httpx.get(output).status_code == 404 for output in shared)
    assert mongo["media"].find_one({"_id": media_id}) is None
    # Re-importing now renders again, under the same content-addressed URLs.
    fourth = upload(api, body, data={"profile": "storefront"}).json()["request_id"]
    again = wait_for_status(api, fourth)
    assert again["products"][0]["images"][0]["reused"] is None
    assert _urls(again) == shared
    assert all(httpx.get(output).status_code == 200 for output in shared)
