"""The caller's ``metadata`` on an upload: echoed in status, the listing, /results and the webhook
a real receiver gets; refused with a 422 that says why when it is not a small flat object."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import CORPUS
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.receiver import Receiver

# Every kind of scalar, a key MongoDB could not take as a field name, and non-ASCII text.
METADATA: dict[str, Any] = {
    "context": "spring-catalogue",
    "batch": 42,
    "ratio": 1.5,
    "urgent": False,
    "note": None,
    "$ref.path": "ünïcode ✓",
}


def _listed(api: httpx.Client, request_id: str) -> dict[str, Any]:
    offset = 0
    while True:
        page = api.get("/api/requests", params={"offset": offset, "limit": 100}).json()
        for item in page["requests"]:
            if item["request_id"] == request_id:
                return dict(item)
        assert page["has_more"], f"{request_id} is not listed"
        offset += 100


def _submit_image(api: httpx.Client, form: dict[str, str]) -> httpx.Response:
    photo = (CORPUS / "chelsea_exif_rotated.jpg").read_bytes()
    return api.post(
        "/api/images",
        files={"file": ("cat.jpg", photo, "application/octet-stream")},
        data=form,
    )


def test_a_sheets_metadata_comes_back_everywhere_the_request_is_reported(
    api: httpx.Client, origin: Origin
) -> None:
    rows = [(1, "A", origin.url("/img/rocket.jpg")), (2, "B", origin.url("/img/missing.jpg"))]
    with Receiver() as receiver:
        accepted = upload(
            api,
            sheet(rows),
            data={"webhook_url": receiver.url("/meta"), "metadata": json.dumps(METADATA)},
        )
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        status = wait_for_status(api, request_id)
        assert status["metadata"] == METADATA
        assert list(status["metadata"]) == list(METADATA)  # the caller's key order

        event = json.loads(receiver.wait_for(1, "/meta")[0].body)
    assert event["type"] == "request.completed"
    assert event["data"]["request_id"] == request_id
    assert event["data"]["metadata"] == METADATA

    assert _listed(api, request_id)["metadata"] == METADATA
    results = api.get(f"/api/requests/{request_id}/results")
    assert results.status_code == 200
    lines = [json.loads(line) for line in results.text.splitlines()]
    assert [line["status"] for line in lines] == ["done", "failed"]
    assert all(line["metadata"] == METADATA for line in lines)


def test_a_request_without_metadata_says_null_and_its_lines_leave_it_out(
    api: httpx.Client, origin: Origin
) -> None:
    accepted = upload(api, sheet([(1, "A", origin.url("/img/rocket.jpg"))]))
    request_id = accepted.json()["request_id"]
    assert wait_for_status(api, request_id)["metadata"] is None
    assert _listed(api, request_id)["metadata"] is None
    lines = api.get(f"/api/requests/{request_id}/results").text.splitlines()
    assert len(lines) == 1 and "metadata" not in json.loads(lines[0])


def test_a_single_image_jobs_metadata_reaches_its_webhook(api: httpx.Client) -> None:
    with Receiver() as receiver:
        accepted = _submit_image(
            api, {"webhook_url": receiver.url("/image-meta"), "metadata": '{"sku": "CAT-1"}'}
        )
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        event = json.loads(receiver.wait_for(1, "/image-meta")[0].body)
    assert event["data"]["request_id"] == request_id
    assert event["data"]["metadata"] == {"sku": "CAT-1"}
    assert wait_for_status(api, request_id)["metadata"] == {"sku": "CAT-1"}


BAD = [
    ('{"context": "x"', "metadata is not valid JSON"),
    ('["a", "b"]', "metadata must be a JSON object, not an array"),
    ('"just text"', "metadata must be a JSON object, not a string"),
    (
        '{"a": {"b": 1}}',
        "metadata values must be strings, numbers, booleans or null; 'a' is an object",
    ),
    ('{"tags": [1, 2]}', "'tags' is an array"),
    ('{"x": NaN}', "NaN is not a JSON number"),
    (json.dumps({"blob": "x" * 4096}), "metadata is 4108 bytes; the limit is 4096"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD)
@pytest.mark.parametrize("endpoint", ["/api/upload", "/api/images"])
def test_bad_metadata_is_422_saying_why(
    api: httpx.Client, origin: Origin, endpoint: str, raw: str, reason: str
) -> None:
    form = {"metadata": raw}
    if endpoint == "/api/upload":
        response = upload(api, sheet([(1, "A", origin.url("/img/rocket.jpg"))]), data=form)
    else:
        response = _submit_image(api, form)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["field"] == "metadata"
    assert reason in detail["message"]


def test_metadata_at_the_limit_is_accepted(api: httpx.Client, origin: Origin) -> None:
    padding = 4096 - len(json.dumps({"blob": ""}))
    raw = json.dumps({"blob": "x" * padding})
    assert len(raw.encode()) == 4096
    accepted = upload(api, sheet([(1, "A", origin.url("/img/rocket.jpg"))]), data={"metadata": raw})
    assert accepted.status_code == 202, accepted.text
    status = api.get(f"/api/status/{accepted.json()['request_id']}").json()
    assert status["metadata"] == {"blob": "x" * padding}
