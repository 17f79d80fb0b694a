"""Outputs on S3, end to end: a batch through the real stack with IMGBATCH_STORAGE=s3 on a real
SeaweedFS, served by /media streamed and as presigned redirects, then removed by retention."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import boto3
import httpx
import pytest
from PIL import Image
from pymongo.database import Database

from imgbatch.cli.embedded import EmbeddedSeaweedFS, free_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.storage import InvalidKey, create_store
from imgbatch.worker.retention import expire_requests
from imgbatch.worker.runtime import build_runtime
from tests.conftest import CORPUS, STACK_ENV
from tests.support.client import sheet, upload, wait_for_status
from tests.support.loopback import CountingServer, LoopbackServer
from tests.support.origin import Origin
from tests.support.stacks import redis_db, serving, side_api
from tests.support.waiting import wait_until

PHOTOS = ["chelsea.jpg", "rocket.jpg", "coffee.jpg"]
SSE = "AES256"


@pytest.fixture(scope="module")
def s3_stack(stack: Stack, seaweedfs: EmbeddedSeaweedFS, s3_settings: Settings) -> Iterator[Stack]:
    """An API and a worker on S3 storage, beside the session's stack: its MongoDB, and a Redis
    database of their own so that the session's (local storage) worker never takes their work."""
    api_port = free_port()
    settings = s3_settings.model_copy(
        update={"mongodb_url": stack.mongodb_url, "redis_url": redis_db(stack, 3), "s3_sse": SSE}
    )
    env = {
        **STACK_ENV,
        **seaweedfs.credentials_env(),
        "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
        # SeaweedFS keeps SSE-S3 (AES256) objects encrypted and says so on HEAD; SSE-KMS needs
        # a KMS it does not have (see test_sse_kms_headers_are_sent_on_every_put).
        "IMGBATCH_S3_SSE": SSE,
    }
    with serving(
        Stack(settings, data_dir=stack.data_dir / "s3", api_port=api_port, extra_env=env)
    ) as running:
        yield running


def _expire(settings: Settings, mongo: Database[dict[str, Any]], request_id: str) -> None:
    """Put the request past its expiry and run the retention sweep once."""
    mongo["requests"].update_one(
        {"_id": request_id}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    rt = build_runtime(settings)
    try:
        assert rt.run(expire_requests(rt)) >= 1
    finally:
        rt.run(rt.client.close())
        rt.loop.close()


def _decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "JPEG"
    return image


def test_a_batch_on_s3_is_served_streamed_and_presigned_then_expired(
    s3_stack: Stack,
    seaweedfs: EmbeddedSeaweedFS,
    origin: Origin,
    mongo: Database[dict[str, Any]],
) -> None:
    settings = s3_stack.settings_for_children()
    store = create_store(settings)
    # Bytes of their own (/unique/): outputs are content-addressed, and the same photo done by
    # another test would be reused, and held by that test's request too.
    run = uuid.uuid4().hex
    rows = [
        (serial, f"SKU-{serial}", origin.url(f"/unique/{name}?run={run}"))
        for serial, name in enumerate(PHOTOS, start=1)
    ]
    with httpx.Client(base_url=s3_stack.api_url, timeout=30) as api:
        request_id = upload(api, sheet(rows)).json()["request_id"]
        status = wait_for_status(api, request_id)
        # A single-image job's original goes to the bucket too, under tmp/: never served.
        photo = (CORPUS / "rocket.jpg").read_bytes() + run.encode()
        job = api.post("/api/images", files={"file": ("rocket.jpg", photo)}).json()["request_id"]
        assert wait_for_status(api, job)["status"] == "completed"
    assert (status["status"], status["images_done"], status["images_failed"]) == ("completed", 3, 0)
    outputs = [product["output_image_urls"][0] for product in status["products"]]
    keys = [output.split("/media/", 1)[1] for output in outputs]
    assert outputs == [f"{s3_stack.api_url}/media/{key}" for key in keys]
    assert all(key.startswith("o/") and key.endswith("/original.jpg") for key in keys)
    original = f"tmp/{job}/original"
    assert asyncio.run(store.get(original)) == photo
    with pytest.raises(InvalidKey):
        asyncio.run(store.presigned_url(original, expires_in=60))

    # In the bucket, and on no disk of ours.
    assert all(asyncio.run(store.exists(key)) for key in keys)
    assert not list(s3_stack.data_dir.rglob("*.jpg"))

    # Streamed by the API from the bucket: whole JPEGs of the source's size.
    streamed = []
    for output, name in zip(outputs, PHOTOS, strict=True):
        response = httpx.get(output)
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        with Image.open(CORPUS / name) as source:
            assert _decoded(response).size == source.size
        streamed.append(response.content)

    # Presigned: the API answers with a redirect into the bucket, and the bytes come from there.
    # The same API also shows output URLs on a media base URL (a CDN in front of /media).
    cdn = f"{s3_stack.api_url}/media/"
    presigned_env = {"IMGBATCH_MEDIA_REDIRECT": "presigned", "IMGBATCH_MEDIA_BASE_URL": cdn}
    with (
        side_api(s3_stack, "api-presigned", presigned_env) as presigning,
        httpx.Client(base_url=presigning, timeout=30) as api,
    ):
        shown = api.get(f"/api/status/{request_id}").json()["products"]
        assert [p["output_image_urls"][0] for p in shown] == [cdn + key for key in keys]
        for key, expected in zip(keys, streamed, strict=True):
            redirect = api.get(f"/media/{key}")
            assert redirect.status_code == 302
            location = redirect.headers["location"]
            assert location.startswith(f"{seaweedfs.url}/{settings.s3_bucket}/{key}?")
            assert "X-Amz-Signature=" in location
            followed = api.get(f"/media/{key}", follow_redirects=True)
            _decoded(followed)
            assert followed.content == expected
        assert api.get(f"/media/{request_id}/9/0.jpg").status_code == 404
        assert api.get("/media/../../etc/passwd").status_code == 404
        # No redirect for the temporary original either: the same 404 as a missing key, in
        # both modes.
        for path in (f"/media/{original}", f"/media/o/../{original}"):
            assert api.get(path).status_code == 404, path
            assert httpx.get(f"{s3_stack.api_url}{path}").status_code == 404, path

        # Retention deletes them from the bucket; neither mode serves them any more.
        _expire(settings, mongo, request_id)
        assert not any(asyncio.run(store.exists(key)) for key in keys)
        for key in keys:
            assert api.get(f"/media/{key}").status_code == 404
            assert httpx.get(f"{s3_stack.api_url}/media/{key}").status_code == 404


def test_result_files_are_stored_in_the_bucket_served_by_range_and_expired(
    s3_stack: Stack, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    settings = s3_stack.settings_for_children()
    store = create_store(settings)
    rows = [(1, "One", origin.url("/img/rocket.jpg")), (2, "Two", origin.url("/status/404"))]
    with httpx.Client(base_url=s3_stack.api_url, timeout=30) as api:
        request_id = upload(api, sheet(rows)).json()["request_id"]
        wait_for_status(api, request_id)
        live = api.get(f"/api/download/{request_id}")
        responses: list[httpx.Response] = []

        def written() -> bool:
            responses.append(api.get(f"/api/download/{request_id}"))
            return "content-length" in responses[-1].headers

        wait_until(written, timeout=60, every=0.1, what="the result CSV in the bucket")
        whole = responses[-1]
        assert whole.content == live.content
        tag = whole.headers["etag"]
        key = f"results/{request_id}/{tag.strip(chr(34)).rsplit('-', 1)[0]}/results.csv"
        assert asyncio.run(store.get(key)) == whole.content
        assert not list(s3_stack.data_dir.rglob("results.csv"))  # on no disk of ours

        part = api.get(f"/api/download/{request_id}", headers={"Range": "bytes=3-12"})
        assert part.status_code == 206
        assert part.content == whole.content[3:13]
        assert part.headers["content-range"] == f"bytes 3-12/{len(whole.content)}"
        assert (
            api.get(f"/api/download/{request_id}", headers={"If-None-Match": tag}).status_code
            == 304
        )
        failed = api.get(f"/api/download/{request_id}", params={"only": "failed"})
        assert failed.text.splitlines()[1:] == [f"2,Two,{origin.url('/status/404')}"]

    _expire(settings, mongo, request_id)
    assert asyncio.run(store.exists(key)) is False


def _encryption(seaweedfs: EmbeddedSeaweedFS, bucket: str, prefix: str) -> dict[str, str | None]:
    """Every object under ``prefix`` and the encryption its HEAD reports."""
    s3 = boto3.client("s3", endpoint_url=seaweedfs.url, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        item["Key"]: s3.head_object(Bucket=bucket, Key=item["Key"]).get("ServerSideEncryption")
        for item in listed
    }


def test_every_object_written_is_encrypted_and_a_delete_removes_them_from_the_bucket(
    s3_stack: Stack, seaweedfs: EmbeddedSeaweedFS, origin: Origin
) -> None:
    settings = s3_stack.settings_for_children()
    bucket = settings.s3_bucket
    run = uuid.uuid4().hex
    with httpx.Client(base_url=s3_stack.api_url, timeout=30) as api:
        request_id = upload(
            api, sheet([(1, "Own", origin.url(f"/unique/chelsea.jpg?run={run}"))])
        ).json()["request_id"]
        status = wait_for_status(api, request_id)
        photo = (CORPUS / "coffee.jpg").read_bytes() + run.encode()
        job = api.post("/api/images", files={"file": ("coffee.jpg", photo)}).json()["request_id"]
        job_status = wait_for_status(api, job)
        outputs = [s["products"][0]["output_image_urls"][0] for s in (status, job_status)]
        folders = [output.split("/media/", 1)[1].rpartition("/")[0] + "/" for output in outputs]
        # Result files are stored once the request completes, a moment after its status says so.
        results = [f"results/{request_id}/", f"results/{job}/"]
        wait_until(
            lambda: all(_encryption(seaweedfs, bucket, prefix) for prefix in results),
            timeout=60,
            every=0.2,
            what="both requests' result files in the bucket",
        )
        written = {
            key: sse
            for prefix in (*folders, f"tmp/{job}/", *results)
            for key, sse in _encryption(seaweedfs, bucket, prefix).items()
        }
        # Outputs of both jobs (every variant file), the single-image job's original, and the
        # result files of both.
        assert f"tmp/{job}/original" in written
        assert sum(key.startswith("o/") for key in written) >= 2
        assert sum(key.endswith("/results.csv") for key in written) == 2, written
        assert set(written.values()) == {SSE}, written

        for deleted in (request_id, job):
            assert api.delete(f"/api/requests/{deleted}").status_code == 204
        for prefix in (*folders, f"tmp/{job}/", *results):
            assert _encryption(seaweedfs, bucket, prefix) == {}
        for output in outputs:
            assert httpx.get(output).status_code == 404
        assert api.get(f"/api/status/{request_id}").status_code == 404


class _RecordingS3(BaseHTTPRequestHandler):
    """Stands in for an S3 endpoint that has a KMS: answers every PUT 200, records headers."""

    protocol_version = "HTTP/1.1"
    puts: ClassVar[list[dict[str, str]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).puts.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_sse_kms_headers_are_sent_on_every_put(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # SeaweedFS 4.48 answers an aws:kms PUT with 500 ("handleSSEKMSEncryption: encryption
    # failed: KMS is not configured" in its log), so what is checked here is what the store
    # sends: the headers AWS reads, on the wire to a real HTTP server.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    _RecordingS3.puts = []
    with LoopbackServer(CountingServer(_RecordingS3), "recording-s3") as endpoint:
        settings = Settings(
            storage="s3",
            s3_endpoint_url=f"http://127.0.0.1:{endpoint.port}",
            s3_bucket="kms-bucket",
            s3_sse="aws:kms",
            s3_sse_kms_key_id="alias/imgbatch-outputs",
        )
        store = create_store(settings)
        for key in ("o/ab/cd/original.jpg", "tmp/job/original"):
            asyncio.run(store.put(key, b"bytes", content_type="image/jpeg"))
        # A result file goes up from a file on disk (put_file), not from bytes.
        csv = tmp_path / "results.csv"
        csv.write_bytes(b"serial,name\n1,One\n")
        asyncio.run(store.put_file("results/req/tag/results.csv", csv, content_type="text/csv"))
    assert len(_RecordingS3.puts) == 3
    for headers in _RecordingS3.puts:
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/imgbatch-outputs"


def test_a_kms_key_without_aws_kms_is_refused() -> None:
    with pytest.raises(ValueError, match="IMGBATCH_S3_SSE=aws:kms"):
        Settings(storage="s3", s3_sse="AES256", s3_sse_kms_key_id="alias/x")


def test_a_store_that_does_not_answer_is_a_503_with_retry_after_not_a_500(
    stack: Stack, seaweedfs: EmbeddedSeaweedFS
) -> None:
    """Outputs on S3 while the store is down (stopped, restarting: nothing listens on its
    port). /media answers 503 with Retry-After once the client's few seconds of retries are
    spent: a client is told to come back, not shown a server error, and not held for the 3
    minutes obstore would retry by default (httpx gives up after 60 s here)."""
    down = f"http://127.0.0.1:{free_port()}"
    env = {
        **STACK_ENV,
        **seaweedfs.credentials_env(),
        "IMGBATCH_STORAGE": "s3",
        "IMGBATCH_S3_ENDPOINT_URL": down,
        "IMGBATCH_S3_BUCKET": "imgbatch-down",
    }
    key = f"{uuid.uuid4().hex}/1/0.jpg"
    with side_api(stack, "s3-down", env) as api_url:
        answer = httpx.get(f"{api_url}/media/{key}", timeout=60)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.json() == {"detail": "the media store is unavailable; try again shortly"}
