"""Fault tests: each test gets its own MongoDB-protocol server, Redis, API, worker and beat on
free ports, so it can kill any of them. Faults are injected at a point chosen from progress."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pymongo import MongoClient

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from tests.conftest import CORPUS, STACK_ENV
from tests.support.client import sheet, upload, wait_for_status
from tests.support.logs import JSON_LOGS, log_events
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

POISON = "poison-pill"
FAULT_ENV = {
    **STACK_ENV,
    **JSON_LOGS,  # what each worker stored is read back from its log
    # Recovery paths run on a test's time scale; README explains the production values.
    "IMGBATCH_REQUEST_IDLE_SECONDS": "4",
    "IMGBATCH_PRODUCT_LEASE_SECONDS": "2",
    "IMGBATCH_RECONCILE_INTERVAL_SECONDS": "1",
    "IMGBATCH_BROKER_VISIBILITY_TIMEOUT": "10",
    "IMGBATCH_BROKER_RESTORE_INTERVAL_SECONDS": "1",
    "IMGBATCH_STAGING_TTL_SECONDS": "2",
    "IMGBATCH_TEST_CRASH_MARKER": POISON,
    # Small tasks, so a fault at 30 % still finds most of the batch queued or running.
    "IMGBATCH_PRODUCTS_PER_TASK": "3",
    "IMGBATCH_WEBHOOK_RETRY_SCHEDULE": "[0, 1, 1, 2, 2]",
    "IMGBATCH_WEBHOOK_POLL_INTERVAL_SECONDS": "0.5",
}
PHOTOS = ["chelsea.jpg", "rocket.jpg", "coffee.jpg", "astronaut.jpg"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def slow_origin() -> Iterator[Origin]:
    with Origin(CORPUS, latency=0.05, latency_jitter=0.03) as served:
        yield served


class FaultStack(Stack):
    """A stack plus what the fault tests need to look inside it."""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def db(self) -> Any:
        assert self.mongodb_url
        return MongoClient(self.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=20000)[
            "imgbatch"
        ]

    def stored_writes(self, worker: str = "worker*") -> dict[str, int]:
        """How many times each output key was written, from the log of every worker whose name
        matches ``worker``."""
        writes: dict[str, int] = {}
        for log in (self.data_dir / "logs").glob(f"{worker}.log"):
            for event in log_events(log):
                if event["event"] == "image.stored":
                    writes[event["key"]] = writes.get(event["key"], 0) + 1
        return writes

    def worker_ready(self, worker: str = "worker") -> bool:
        log = self.data_dir / "logs" / f"{worker}.log"
        return any(event["event"].endswith(" ready.") for event in log_events(log))


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[FaultStack]:
    api_port = free_port()
    env = {**FAULT_ENV, "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}"}
    stack = FaultStack(
        Settings(mongodb_url=None, redis_url=None),
        data_dir=tmp_path,
        api_port=api_port,
        extra_env=env,
    )
    try:
        stack.start_services()
        stack.start_api()
        stack.start_worker(concurrency=2)
        stack.start_beat()
        stack.wait_healthy()
        # The API answers long before a worker has imported everything on a busy machine; a
        # test's wait for progress must not spend its time on the worker's start.
        wait_until(stack.worker_ready, timeout=300, every=0.2, what="the worker to be ready")
        yield stack
    finally:
        stack.stop()


def submit_batch(
    api: httpx.Client,
    origin: Origin,
    *,
    products: int = 70,
    poison_serial: int | None = None,
    receiver: Receiver | None = None,
) -> str:
    rows = []
    for serial in range(1, products + 1):
        # /unique/: bytes of their own per image, so every image really is rendered (the same
        # bytes would be rendered once and reused).
        urls = [
            origin.url(f"/unique/{PHOTOS[(serial + i) % len(PHOTOS)]}?p={serial}&i={i}")
            for i in range(3)
        ]
        if serial == poison_serial:
            urls[1] += f"&{POISON}"
        rows.append((serial, f"SKU-{serial}", ",".join(urls)))
    data = {"webhook_url": receiver.url(f"/hook/{uuid.uuid4().hex}")} if receiver else None
    response = upload(api, sheet(rows), data=data)
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def batch_in_flight(
    stack: FaultStack, origin: Origin, receiver: Receiver, fraction: float = 0.3
) -> str:
    """A 210-image batch (with a webhook), once ``fraction`` of it is done: the fault moment."""
    with stack.client() as api:
        request_id = submit_batch(api, origin, receiver=receiver)
    wait_for_progress(stack, request_id, fraction)
    return request_id


def wait_for_progress(stack: FaultStack, request_id: str, fraction: float) -> None:
    """Read from MongoDB, not the API: its status answers may be a second old."""
    requests = stack.db()["requests"]

    def reached() -> bool:
        doc = requests.find_one({"_id": request_id}) or {}
        finished = doc.get("images_done", 0) + doc.get("images_failed", 0)
        return bool(doc) and finished >= fraction * doc["images_total"]

    wait_until(reached, what=f"{fraction:.0%} progress")


def assert_recovered(
    stack: FaultStack, request_id: str, *, timeout: float = 120.0
) -> dict[str, Any]:
    """The fault tests' guarantees: completed, counted once, outputs whole, writes bounded."""
    with stack.client() as api:
        status = wait_for_status(api, request_id, ("completed",), timeout=timeout)
    assert status["images_done"] + status["images_failed"] == status["images_total"]
    assert status["products_done"] == status["products_total"]
    attempts = {
        p["serial_number"]: p["attempts"]
        for p in stack.db()["products"].find({"request_id": request_id})
    }
    writes = stack.stored_writes()
    with stack.client() as api:
        for product in status["products"]:
            for output in product["output_image_urls"]:
                if output is None:
                    continue
                # Content-addressed: the key is the output URL's, whatever the image's position.
                key = output.split("/media/", 1)[1]
                # Whatever the store, the output URL a user was given serves a whole image.
                assert_serves_jpeg(api, output)
                # Written once per run of the product that got that far, never more.
                assert 1 <= writes.get(key, 0) <= attempts[product["serial_number"]], key
    return status


def assert_serves_jpeg(api: httpx.Client, url: str) -> None:
    response = api.get(url, follow_redirects=True)
    assert response.status_code == 200, url
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()
        assert image.format == "JPEG"


def assert_one_completion_event(receiver: Receiver, request_id: str) -> None:
    """At-least-once delivery, but exactly one ``request.completed`` event for the request."""

    def completed_ids() -> set[str]:
        ids = set()
        for arrival in receiver.arrivals():
            body = json.loads(arrival.body)
            if body["type"] == "request.completed" and body["data"]["request_id"] == request_id:
                ids.add(arrival.headers["webhook-id"])
        return ids

    wait_until(lambda: bool(completed_ids()), timeout=60, what="the request.completed webhook")
    time.sleep(2)  # room for a duplicate event to show up, if one were ever created
    assert len(completed_ids()) == 1
