"""Single-image jobs: the door check, the job through to its webhook, the original kept in
temporary storage (never served), used by a retry, and swept after the TTL."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pymongo.database import Database

from imgbatch.cli.stack import Stack
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from imgbatch.worker.retention import sweep_temp_originals
from imgbatch.worker.runtime import WorkerRuntime, build_runtime
from tests.conftest import CORPUS
from tests.support.client import result_rows, wait_for_status
from tests.support.images import many_scan_jpeg
from tests.support.receiver import Receiver
from tests.support.stacks import redis_db, side_api


def submit(
    api: httpx.Client,
    data: bytes,
    *,
    filename: str = "photo.jpg",
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return api.post(
        "/api/images",
        files={"file": (filename, data, "application/octet-stream")},
        data=form or {},
        headers=headers or {},
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_a_single_image_job_through_to_its_webhook(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    photo = (CORPUS / "chelsea_exif_rotated.jpg").read_bytes()
    hook = receiver.url("/single-image")
    accepted = submit(
        api,
        photo,
        filename="shots/cat.jpg",
        form={"profile": "storefront", "webhook_url": hook},
        headers={"Idempotency-Key": "cat-1"},
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    request_id = body["request_id"]
    assert (body["products"], body["images"], body["status"]) == (1, 1, "pending")
    assert body["status_url"].endswith(f"/api/status/{request_id}")
    assert body["download_url"].endswith(f"/api/download/{request_id}")
    assert body["webhook_secret"].startswith("whsec_")
    again = submit(
        api,
        photo,
        filename="shots/cat.jpg",
        form={"profile": "storefront", "webhook_url": hook},
        headers={"Idempotency-Key": "cat-1"},
    )
    assert again.json() == body

    event = json.loads(receiver.wait_for(1, "/single-image")[0].body)
    assert event["type"] == "request.completed"
    data = event["data"]
    assert data["request_id"] == request_id
    assert data["results_url"].endswith(f"/api/requests/{request_id}/results")
    image = data["image"]
    assert image["status"] == "done"
    assert image["url"] == "upload:cat.jpg"
    assert list(image["variants"]) == ["original", "thumbnail", "medium", "large"]
    thumbnail = httpx.get(image["variants"]["thumbnail"]["url"])
    with Image.open(io.BytesIO(thumbnail.content)) as decoded:
        assert (decoded.format, decoded.size) == ("WEBP", (100, 150))
    assert image["exif"]["make"] == "ExampleCam"
    assert image["exif"]["orientation"] == 6
    assert "latitude" not in image["exif"]
    assert image["processing_ms"] >= 0
    assert image["operations"][:2] == ["decode", "orient"]
    assert "resize:thumbnail" in image["operations"]

    record = api.get(f"/api/images/{request_id}")
    assert record.status_code == 200
    assert record.json() == {**image, "request_id": request_id, "request_status": "completed"}
    status = wait_for_status(api, request_id)
    assert status["products"][0]["images"][0]["variants"] == image["variants"]
    rows = result_rows(api, request_id)
    assert rows[0][3:] == ["Output Image Urls", *(f"{n} Image Urls" for n in ("Thumbnail",
        "Medium", "Large")), "Errors", "Warnings"]  # fmt: skip
    assert rows[1][:4] == ["1", "cat.jpg", "upload:cat.jpg", image["output_url"]]

    # The original is kept in temporary storage and never served, however the path is spelt.
    original = stack.data_dir / "media" / "tmp" / request_id / "original"
    assert original.read_bytes() == photo
    for path in (
        f"/media/tmp/{request_id}/original",
        f"/media/o/../tmp/{request_id}/original",
        f"/media/o/%2e%2e/tmp/{request_id}/original",
        f"/media/./tmp/{request_id}/original",
        f"/media//tmp/{request_id}/original",
    ):
        assert api.get(path).status_code == 404, path


def test_not_an_image_or_a_pixel_bomb_is_refused_at_once(
    api: httpx.Client, mongo: Database[dict[str, Any]]
) -> None:
    before = mongo["requests"].count_documents({})
    for name, code in (("not_an_image.jpg", "not_an_image"), ("bomb_900mp.png", "too_many_pixels")):
        refused = submit(api, (CORPUS / name).read_bytes(), filename=name)
        assert refused.status_code == 422, name
        assert refused.json()["detail"]["code"] == code
    # A JPEG with thousands of do-nothing scans: counted from its markers, never decoded.
    scans = submit(api, many_scan_jpeg(2000, side=64), filename="scans.jpg")
    assert scans.status_code == 422
    assert scans.json()["detail"]["code"] == "decode_timeout"
    html = submit(api, b"<!doctype html><html>login</html>")
    assert html.status_code == 422
    assert "HTML" in html.json()["detail"]["message"]
    assert submit(api, (CORPUS / "chelsea.jpg").read_bytes(), form={"profile": "x"}).json()[
        "detail"
    ]["valid_profiles"][:2] == ["default", "storefront"]
    assert mongo["requests"].count_documents({}) == before


def test_an_image_over_the_byte_cap_is_413(api: httpx.Client) -> None:
    too_big = submit(api, b"\xff\xd8\xff" + bytes(25 * 1024 * 1024 + 100 * 1024))
    assert too_big.status_code == 413


def test_other_requests_are_not_single_image_jobs(api: httpx.Client) -> None:
    assert api.get("/api/images/nope").status_code == 404


@pytest.fixture
def offline(stack: Stack) -> Iterator[tuple[httpx.Client, WorkerRuntime]]:
    """An API whose tasks go to a Redis database no worker reads, and the worker code in this
    process on the same data: each step of a job is run here, when the test says so."""
    env = {"IMGBATCH_REDIS_URL": redis_db(stack, 12)}
    settings = stack.settings_for_children().model_copy(
        update={"data_dir": stack.data_dir, "redis_url": env["IMGBATCH_REDIS_URL"]}
    )
    rt = build_runtime(settings)
    try:
        with (
            side_api(stack, "api-offline", env) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            yield client, rt
    finally:
        rt.run(rt.client.close())
        rt.loop.close()


def _run(rt: WorkerRuntime, request_id: str, **settings: Any) -> None:
    rt.settings = rt.settings.model_copy(update=settings)
    rt.run(dispatch_request(rt, request_id))
    rt.run(process_products(rt, request_id, [1]))


def test_a_retry_reads_the_kept_original_until_it_is_swept(
    stack: Stack, offline: tuple[httpx.Client, WorkerRuntime]
) -> None:
    client, rt = offline
    # Bytes of its own (after the image's end): the same bytes done before would be reused.
    photo = (CORPUS / "coffee.jpg").read_bytes() + uuid.uuid4().bytes
    request_id = submit(client, photo, filename="mug.jpg").json()["request_id"]
    original: Path = stack.data_dir / "media" / "tmp" / request_id / "original"

    _run(rt, request_id, max_image_pixels=100)  # this worker refuses it: a failed image
    failed = wait_for_status(client, request_id)
    assert failed["products"][0]["images"][0]["error"]["code"] == "too_many_pixels"
    assert client.post(f"/api/requests/{request_id}/retry").status_code == 202

    # The decode caps hold for a single image's render too: no CPU left, decode_timeout.
    _run(rt, request_id, max_image_pixels=50_000_000, decode_cpu_seconds=1e-6)
    slow = wait_for_status(client, request_id)
    assert slow["products"][0]["images"][0]["error"]["code"] == "decode_timeout"
    assert client.post(f"/api/requests/{request_id}/retry").status_code == 202

    _run(rt, request_id, decode_cpu_seconds=5.0)
    done = wait_for_status(client, request_id)
    assert (done["images_done"], done["images_failed"]) == (1, 0)
    record = client.get(f"/api/images/{request_id}").json()
    assert record["source"]["bytes"] == len(photo)
    assert httpx.get(record["output_url"]).status_code == 200

    # Final, but not for IMGBATCH_TEMP_TTL_HOURS yet: kept.
    rt.run(sweep_temp_originals(rt))
    assert original.exists()
    # IMGBATCH_TEMP_TTL_HOURS later: the job finished long enough ago, and its entry is due.
    long_ago = datetime.now(UTC) - timedelta(hours=rt.settings.temp_ttl_hours + 1)
    rt.run(rt.db["requests"].update_one({"_id": request_id}, {"$set": {"completed_at": long_ago}}))
    rt.run(
        rt.db["temp_objects"].update_one(
            {"request_id": request_id}, {"$set": {"not_before": long_ago}}
        )
    )
    rt.run(sweep_temp_originals(rt))
    assert not original.exists()
    assert httpx.get(record["output_url"]).status_code == 200  # the outputs are not temporary
