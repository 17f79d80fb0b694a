"""``DELETE /api/requests/{id}`` on the real stack: everything the request had answers 404
afterwards, outputs only it held are gone from the store, outputs another request holds stay."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from pymongo.database import Database

from imgbatch.cli.stack import Stack
from tests.conftest import CORPUS
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin


def _outputs(status: dict[str, Any]) -> list[str]:
    return [url for product in status["products"] for url in product["output_image_urls"]]


def test_a_deleted_request_and_the_outputs_only_it_held_answer_404(
    stack: Stack, api: httpx.Client, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    run = uuid.uuid4().hex
    # Bytes of its own (/unique/), and one photo a second request of the same owner also uses.
    own = origin.url(f"/unique/chelsea.jpg?run={run}")
    shared = origin.url(f"/unique/rocket.jpg?run={run}")
    request_id = upload(api, sheet([(1, "Own", own), (2, "Shared", shared)])).json()["request_id"]
    kept_id = upload(api, sheet([(1, "Shared too", shared)])).json()["request_id"]
    status = wait_for_status(api, request_id)
    kept = wait_for_status(api, kept_id)
    assert (status["status"], status["images_done"]) == ("completed", 2)
    own_output, shared_output = _outputs(status)
    assert _outputs(kept) == [shared_output]  # content-addressed: one object, two holders
    assert httpx.get(own_output).status_code == 200
    assert (stack.data_dir / "media" / own_output.split("/media/", 1)[1]).exists()

    deleted = api.delete(f"/api/requests/{request_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""

    for path in (
        f"/api/status/{request_id}",
        f"/api/download/{request_id}",
        f"/api/requests/{request_id}/results",
        f"/api/requests/{request_id}/events",
        f"/api/requests/{request_id}/audit",
    ):
        gone = api.get(path)
        assert gone.status_code == 404, (path, gone.text)
        assert gone.json() == {"detail": f"request {request_id} not found"}
    assert httpx.get(own_output).status_code == 404
    own_file = stack.data_dir / "media" / own_output.split("/media/", 1)[1]
    assert not own_file.exists()
    # Still held by the other request: still served.
    assert httpx.get(shared_output).status_code == 200
    assert api.get(f"/api/status/{kept_id}").json()["status"] == "completed"
    assert request_id not in [r["request_id"] for r in api.get("/api/requests").json()["requests"]]
    assert mongo["products"].count_documents({"request_id": request_id}) == 0
    assert mongo["requests"].count_documents({"_id": request_id}) == 0

    assert api.delete(f"/api/requests/{request_id}").status_code == 404
    assert api.delete("/api/requests/no-such-request").status_code == 404


def test_a_running_request_is_cancelled_then_deleted(
    stack: Stack, api: httpx.Client, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    rows = [(i, f"Slow {i}", origin.url(f"/slow/rocket.jpg?delay=2&i={i}")) for i in range(1, 25)]
    request_id = upload(api, sheet(rows)).json()["request_id"]
    wait_for_status(api, request_id, ("in_progress",))

    assert api.delete(f"/api/requests/{request_id}").status_code == 204
    assert api.get(f"/api/status/{request_id}").status_code == 404
    assert mongo["requests"].count_documents({"_id": request_id}) == 0
    # Queued products go with it: the worker finds no request and drops their tasks.
    assert mongo["products"].count_documents({"request_id": request_id}) == 0
    # Its in-flight slot was given back by the cancel.
    assert mongo["slots"].count_documents({"holder": request_id}) == 0


def test_deleting_a_single_image_job_removes_its_temporary_original(
    stack: Stack, api: httpx.Client, mongo: Database[dict[str, Any]]
) -> None:
    photo = (CORPUS / "coffee.jpg").read_bytes() + uuid.uuid4().hex.encode()
    accepted = api.post("/api/images", files={"file": ("coffee.jpg", photo)})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()["request_id"]
    status = wait_for_status(api, job)
    output = _outputs(status)[0]
    record = mongo["requests"].find_one({"_id": job})
    assert record is not None and record["temp_key"]
    original = stack.data_dir / "media" / record["temp_key"]
    assert original.exists()

    assert api.delete(f"/api/requests/{job}").status_code == 204
    assert not original.exists()
    assert mongo["temp_objects"].count_documents({"request_id": job}) == 0
    assert httpx.get(output).status_code == 404
    assert api.get(f"/api/images/{job}").status_code == 404
