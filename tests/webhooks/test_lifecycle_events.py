"""``image.failed`` and ``request.deleted`` end to end: real requests on the webhook stack, the
real webhook worker signing and sending, a real receiver verifying every arrival."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from pymongo.database import Database

from tests.conftest import CORPUS
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.receiver import Arrival, Receiver
from tests.webhooks.test_delivery import delivery_for, subscribe, verify


def _by_type(arrivals: list[Arrival], event_type: str) -> list[Arrival]:
    return [a for a in arrivals if json.loads(a.body)["type"] == event_type]


def _stored(db: Database[dict[str, Any]], request_id: str, event_type: str) -> int:
    return db["webhook_events"].count_documents({"request_id": request_id, "type": event_type})


def test_a_single_image_job_that_fails_sends_a_signed_image_failed(
    hooks_api: httpx.Client,
) -> None:
    # A JPEG cut in half: its header passes the upload's checks, the worker's decode fails.
    whole = (CORPUS / "coffee.jpg").read_bytes()
    broken = whole[: len(whole) // 2] + uuid.uuid4().hex.encode()
    with Receiver() as receiver:
        accepted = hooks_api.post(
            "/api/images",
            files={"file": ("mug.jpg", broken)},
            data={"webhook_url": receiver.url("/job")},
        )
        assert accepted.status_code == 202, accepted.text
        job, secret = accepted.json()["request_id"], accepted.json()["webhook_secret"]
        status = wait_for_status(hooks_api, job)
        assert (status["images_done"], status["images_failed"]) == (0, 1)
        arrivals = receiver.wait_for(2, "/job")

    (failed,) = _by_type(arrivals, "image.failed")
    assert len(_by_type(arrivals, "request.completed")) == 1
    payload = verify(failed, secret)
    error = status["products"][0]["errors"][0]
    assert payload["data"] == {
        "request_id": job,
        "kind": "image",
        "serial_number": 1,
        "product_name": status["products"][0]["product_name"],
        "image_index": 0,
        "url": error["url"],
        "error": {"code": error["code"], "message": error["message"]},
        "attempts": 1,
        "status_url": f"{str(hooks_api.base_url).rstrip('/')}/api/status/{job}",
    }
    assert error["code"] == "corrupt_image", error


def test_a_sheet_sends_image_failed_only_when_its_upload_asks(
    hooks_api: httpx.Client, origin: Origin, hooks_db: Database[dict[str, Any]]
) -> None:
    good = origin.url(f"/img/rocket.jpg?{uuid.uuid4().hex}")
    # Answers 500 to every attempt: retried (IMGBATCH_DOWNLOAD_ATTEMPTS=2), then failed.
    broken = origin.url(f"/status/500?{uuid.uuid4().hex}")
    rows = [(1, "Fine", good), (2, "Broken", f"{good},{broken}")]
    with Receiver() as receiver:
        asked = upload(
            hooks_api,
            sheet(rows),
            data={"webhook_url": receiver.url("/asked"), "webhook_events": "image.failed"},
        ).json()
        plain = upload(hooks_api, sheet(rows), data={"webhook_url": receiver.url("/plain")}).json()
        for accepted in (asked, plain):
            assert wait_for_status(hooks_api, accepted["request_id"])["images_failed"] == 1
        asked_arrivals = receiver.wait_for(2, "/asked")
        # request.completed is published after every product's events: once it is here, an
        # image.failed for the plain request would have been stored already.
        plain_arrivals = receiver.wait_for(1, "/plain")

    (failed,) = _by_type(asked_arrivals, "image.failed")
    data = verify(failed, asked["webhook_secret"])["data"]
    assert data["request_id"] == asked["request_id"]
    assert (data["kind"], data["serial_number"], data["product_name"]) == ("sheet", 2, "Broken")
    assert (data["image_index"], data["url"], data["attempts"]) == (1, broken, 2)
    assert data["error"]["code"] == "http_error"
    assert "HTTP 500" in data["error"]["message"]
    assert [json.loads(a.body)["type"] for a in plain_arrivals] == ["request.completed"]
    assert _stored(hooks_db, plain["request_id"], "image.failed") == 0


def test_an_image_failed_subscriber_gets_every_request_of_its_owner(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    broken = origin.url(f"/status/404?{uuid.uuid4().hex}")
    with Receiver() as receiver:
        subscriber = subscribe(hooks_api, receiver.url("/failures"), events=("image.failed",))
        request_id = upload(hooks_api, sheet([(7, "Missing", broken)])).json()["request_id"]
        wait_for_status(hooks_api, request_id)
        delivery_for(hooks_api, subscriber["id"], request_id, states=("delivered",))
        (arrival,) = receiver.arrivals("/failures")

    payload = verify(arrival, subscriber["secret"])
    assert payload["type"] == "image.failed"
    data = payload["data"]
    assert (data["request_id"], data["serial_number"], data["url"]) == (request_id, 7, broken)
    # A 404 is final: no retry.
    assert (data["error"]["code"], data["attempts"]) == ("http_error", 1)


def test_upload_webhook_events_are_checked(hooks_api: httpx.Client, origin: Origin) -> None:
    rows = sheet([(1, "A", origin.url("/img/rocket.jpg"))])
    unknown = upload(
        hooks_api,
        rows,
        data={"webhook_url": "http://127.0.0.1:9/h", "webhook_events": "image.exploded"},
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"]["valid_webhook_events"] == ["image.failed"]
    no_url = upload(hooks_api, rows, data={"webhook_events": "image.failed"})
    assert no_url.status_code == 422
    assert "needs a webhook_url" in no_url.json()["detail"]["message"]


def test_deleting_a_request_sends_a_signed_request_deleted(
    hooks_api: httpx.Client, origin: Origin
) -> None:
    with Receiver() as receiver:
        subscriber = subscribe(hooks_api, receiver.url("/deletions"), events=("request.deleted",))
        accepted = upload(
            hooks_api,
            sheet([(1, "A", origin.url(f"/img/chelsea.jpg?{uuid.uuid4().hex}"))]),
            data={"webhook_url": receiver.url("/mine")},
        ).json()
        request_id = accepted["request_id"]
        wait_for_status(hooks_api, request_id)
        receiver.wait_for(1, "/mine")  # request.completed

        assert hooks_api.delete(f"/api/requests/{request_id}").status_code == 204
        mine = receiver.wait_for(2, "/mine")
        delivery_for(hooks_api, subscriber["id"], request_id, states=("delivered",))
        (theirs,) = receiver.arrivals("/deletions")

    (deleted,) = _by_type(mine, "request.deleted")
    # Signed with the upload's secret though the request is gone, and the same event for both.
    payload = verify(deleted, accepted["webhook_secret"])
    assert payload == verify(theirs, subscriber["secret"])
    data = payload["data"]
    assert (data["request_id"], data["status"], data["previous_status"]) == (
        request_id,
        "deleted",
        "completed",
    )
    assert (data["products_total"], data["images_done"], data["images_failed"]) == (1, 1, 0)
    assert data["deleted_at"] >= data["created_at"]
