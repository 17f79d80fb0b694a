"""Owner controls: retry failed images, cancel a running request, and retention (410)."""

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
from imgbatch.worker.runtime import build_runtime
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.stacks import side_api
from tests.support.waiting import broker_idle, wait_until


def test_retry_reprocesses_only_the_failed_images(
    stack: Stack, api: httpx.Client, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    # Fails both download attempts of the first run, succeeds on the retry.
    flaky = origin.url(f"/flaky/{uuid.uuid4().hex}/2/chelsea.jpg")
    good = origin.url("/img/rocket.jpg")
    accepted = upload(api, sheet([(1, "Flaky", f"{good},{flaky}"), (2, "Fine", good)]))
    request_id = accepted.json()["request_id"]
    first = wait_for_status(api, request_id)
    assert (first["images_done"], first["images_failed"]) == (2, 1)
    kept_output = first["products"][0]["output_image_urls"][0]
    kept_file = stack.data_dir / "media" / kept_output.split("/media/", 1)[1]
    kept_mtime = kept_file.stat().st_mtime_ns

    retried = api.post(f"/api/requests/{request_id}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json() == {
        "request_id": request_id,
        "status": "in_progress",
        "products_requeued": 1,
    }
    second = wait_for_status(api, request_id)
    assert second["status"] == "completed"
    assert (second["images_done"], second["images_failed"]) == (3, 0)
    product = second["products"][0]
    assert product["status"] == "completed"
    assert product["errors"] == []
    assert product["output_image_urls"][0] == kept_output
    assert httpx.get(product["output_image_urls"][1]).status_code == 200
    assert kept_file.stat().st_mtime_ns == kept_mtime  # the good image was not redone
    assert mongo["requests"].find_one({"_id": request_id})["completions"] == 2

    again = api.post(f"/api/requests/{request_id}/retry")
    assert again.status_code == 409
    assert again.json()["detail"]["message"] == "the request has no failed images"


def test_retry_and_cancel_of_unknown_or_running_requests(api: httpx.Client, origin: Origin) -> None:
    assert api.post("/api/requests/nope/retry").status_code == 404
    assert api.post("/api/requests/nope/cancel").status_code == 404
    slow = origin.url("/slow/coffee.jpg?delay=2")
    accepted = upload(api, sheet([(1, "Slow", slow)]))
    running = api.post(f"/api/requests/{accepted.json()['request_id']}/retry")
    assert running.status_code == 409
    assert running.json()["detail"]["status"] in ("pending", "in_progress")


def test_cancel_stops_a_request_and_drops_its_queued_products(
    stack: Stack, api: httpx.Client, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    # 48 slow products: 6 tasks of 8, two of them in flight at once on the suite's worker.
    rows = [(i, f"Slow {i}", origin.url(f"/slow/rocket.jpg?delay=2&i={i}")) for i in range(1, 49)]
    request_id = upload(api, sheet(rows)).json()["request_id"]
    wait_for_status(api, request_id, ("in_progress",))
    cancelled = api.post(f"/api/requests/{request_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    # The worker finishes what it holds, and takes (and drops) everything still queued.
    wait_until(
        lambda: (
            broker_idle(stack)
            and mongo["products"].count_documents(
                {"request_id": request_id, "status": "processing"}
            )
            == 0
        ),
        what="the cancelled request's tasks to run out",
    )
    status = wait_for_status(api, request_id, ("cancelled",))
    assert status["status"] == "cancelled"
    assert status["products_done"] <= 16
    # Only the tasks already running were finished; the queued ones were dropped unprocessed.
    assert sum(p["status"] == "pending" for p in status["products"]) >= 32
    download = api.get(f"/api/download/{request_id}")
    assert download.status_code == 409
    assert download.json()["detail"]["status"] == "cancelled"
    assert api.post(f"/api/requests/{request_id}/cancel").status_code == 409


def test_expired_requests_answer_410_and_their_files_are_gone(
    stack: Stack, api: httpx.Client, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    # Bytes of its own: outputs shared with another request would rightly outlive this one.
    source = origin.url(f"/unique/chelsea.jpg?t={uuid.uuid4().hex}")
    request_id = upload(api, sheet([(1, "Old", source)])).json()["request_id"]
    status = wait_for_status(api, request_id)
    output = status["products"][0]["output_image_urls"][0]
    assert httpx.get(output).status_code == 200
    record = mongo["requests"].find_one({"_id": request_id})
    assert record is not None
    assert record["expires_at"] > datetime.now(UTC) + timedelta(days=29)
    mongo["requests"].update_one(
        {"_id": request_id}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )

    rt = build_runtime(
        stack.settings_for_children().model_copy(update={"data_dir": stack.data_dir})
    )
    try:
        assert rt.run(expire_requests(rt)) >= 1
    finally:
        rt.run(rt.client.close())
        rt.loop.close()

    for path in (f"/api/status/{request_id}", f"/api/download/{request_id}"):
        gone = api.get(path)
        assert gone.status_code == 410
        assert "expired" in gone.json()["detail"]
    assert httpx.get(output).status_code == 404
    assert mongo["products"].count_documents({"request_id": request_id}) == 0


def test_a_request_past_its_expiry_answers_410_before_the_sweeper_runs(
    api: httpx.Client, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    request_id = upload(api, sheet([(1, "Old", origin.url("/img/rocket.jpg"))])).json()[
        "request_id"
    ]
    wait_for_status(api, request_id)
    past = datetime.now(UTC) - timedelta(days=2)
    mongo["requests"].update_one(
        {"_id": request_id}, {"$set": {"expires_at": past, "updated_at": past}}
    )
    mongo["products"].update_many({"request_id": request_id}, {"$set": {"expires_at": past}})
    # The database's TTL pass may run before the retention sweeper does; it must not leave a
    # completed request with no products behind.
    mongo.client.admin.command("secantusAdmin.pruneTtl")

    for path in (f"/api/status/{request_id}", f"/api/download/{request_id}"):
        gone = api.get(path)
        assert gone.status_code == 410, gone.text
        assert "expired" in gone.json()["detail"]
    assert api.post(f"/api/requests/{request_id}/retry").status_code == 410


@pytest.fixture(scope="module")
def two_apis(stack: Stack) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two more API processes on the suite's MongoDB and Redis that keep a status answer for
    an hour: an answer that changes within seconds was dropped by a notice, not by age."""
    env = {"IMGBATCH_STATUS_CACHE_SECONDS": "3600"}
    with (
        side_api(stack, "api-a", env) as url_a,
        side_api(stack, "api-b", env) as url_b,
        httpx.Client(base_url=url_a, timeout=30) as a,
        httpx.Client(base_url=url_b, timeout=30) as b,
    ):
        yield a, b


def test_a_cancel_on_one_api_process_shows_at_once_on_another(
    two_apis: tuple[httpx.Client, httpx.Client], origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    a, b = two_apis
    rows = [(i, f"Slow {i}", origin.url(f"/slow/rocket.jpg?delay=2&i={i}")) for i in range(1, 33)]
    request_id = upload(a, sheet(rows)).json()["request_id"]
    seen = wait_for_status(b, request_id, ("in_progress",))
    # Products finishing change no status, so B keeps answering from memory meanwhile.
    wait_until(
        lambda: (
            mongo["requests"].find_one({"_id": request_id})["products_done"] > seen["products_done"]
        ),
        what="a product to finish",
    )
    assert b.get(f"/api/status/{request_id}", params={"limit": 1000}).json() == seen

    assert a.post(f"/api/requests/{request_id}/cancel").status_code == 200
    assert wait_for_status(b, request_id, ("cancelled",), timeout=10)["status"] == "cancelled"


def test_a_retry_on_one_api_process_shows_at_once_on_another(
    two_apis: tuple[httpx.Client, httpx.Client], origin: Origin
) -> None:
    a, b = two_apis
    flaky = origin.url(f"/flaky/{uuid.uuid4().hex}/2/chelsea.jpg")
    request_id = upload(a, sheet([(1, "Flaky", flaky)])).json()["request_id"]
    # B learns of the completion from the worker's notice (it caches for an hour).
    first = wait_for_status(b, request_id, ("completed",))
    assert first["images_failed"] == 1

    assert a.post(f"/api/requests/{request_id}/retry").status_code == 202
    answers: list[tuple[str, int]] = []

    def moved_on() -> bool:
        body = b.get(f"/api/status/{request_id}").json()
        answers.append((body["status"], body["images_failed"]))
        return answers[-1] != ("completed", 1)

    wait_until(moved_on, timeout=10, what="B to drop the answer from before the retry")
    second = wait_for_status(b, request_id, ("completed",))
    assert (second["images_done"], second["images_failed"]) == (1, 0)


def test_a_delete_on_one_api_process_shows_at_once_on_another(
    two_apis: tuple[httpx.Client, httpx.Client], origin: Origin
) -> None:
    a, b = two_apis
    request_id = upload(a, sheet([(1, "Gone soon", origin.url("/img/coffee.jpg"))])).json()[
        "request_id"
    ]
    # B answers from memory from here on (it keeps a status answer for an hour).
    assert wait_for_status(b, request_id)["status"] == "completed"
    assert b.get(f"/api/status/{request_id}").status_code == 200

    assert a.delete(f"/api/requests/{request_id}").status_code == 204
    wait_until(
        lambda: b.get(f"/api/status/{request_id}").status_code == 404,
        timeout=10,
        what="B to drop the deleted request's cached status",
    )
    assert b.delete(f"/api/requests/{request_id}").status_code == 404
