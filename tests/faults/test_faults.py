"""Kill things mid-batch; the batch still completes, counts every image once, loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil

from imgbatch.cli.embedded import EmbeddedMongo, EmbeddedRedis
from tests.faults.conftest import (
    FaultStack,
    assert_one_completion_event,
    assert_recovered,
    batch_in_flight,
    submit_batch,
    wait_until,
)
from tests.support.client import sheet
from tests.support.origin import Origin
from tests.support.receiver import Receiver


def _recovery_seconds(killed_at: float) -> float:
    return round(time.monotonic() - killed_at, 1)


def test_sigkill_of_a_pool_child(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    children = psutil.Process(fault_stack.processes["worker"].pid).children()
    assert children
    os.kill(children[0].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)
    print(f"pool child SIGKILL: recovered in {_recovery_seconds(killed_at)}s")


def test_sigkill_of_the_whole_worker_then_a_new_worker(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    worker = psutil.Process(fault_stack.processes.pop("worker").pid)
    for process in [*worker.children(), worker]:
        process.kill()
    worker.wait(10)
    killed_at = time.monotonic()
    assert fault_stack.db()["requests"].find_one({"_id": request_id})["status"] == "in_progress"
    fault_stack.start_worker("worker-2", concurrency=2)
    assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)
    print(f"whole worker SIGKILL: recovered in {_recovery_seconds(killed_at)}s")


def test_redis_killed_and_restarted_empty(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    redis = next(s for s in fault_stack.services if isinstance(s, EmbeddedRedis))
    redis.stop(kill=True)
    killed_at = time.monotonic()
    time.sleep(1)  # an outage, not a blip
    # Restarted over an empty directory, so its append-only file is gone and every message with
    # it: a lost volume, the worst case (a restart over its data keeps them, tests/cli).
    restarted = EmbeddedRedis(redis.data_dir.with_name("redis-empty"), port=redis.port).start()
    fault_stack.services[fault_stack.services.index(redis)] = restarted
    assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)
    print(f"Redis restarted empty: recovered in {_recovery_seconds(killed_at)}s")


def test_mongodb_killed_and_restarted_on_the_same_data(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    with fault_stack.client() as api:
        mongo = next(s for s in fault_stack.services if isinstance(s, EmbeddedMongo))
        mongo.stop(kill=True)
        killed_at = time.monotonic()
        during = api.get(f"/api/status/{request_id}")
        assert during.status_code == 503
        assert during.headers["retry-after"] == "5"
        assert "database" in during.json()["detail"]
        assert api.get("/api/health").json()["mongodb"] == "unavailable"
    restarted = EmbeddedMongo(mongo.data_dir, port=mongo.port).start()
    fault_stack.services[fault_stack.services.index(mongo)] = restarted
    status = assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)
    # A database outage is nobody's image's fault.
    assert status["images_failed"] == 0
    print(f"MongoDB restarted: recovered in {_recovery_seconds(killed_at)}s")


def test_api_killed_during_a_large_upload(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    db = fault_stack.db()
    url = slow_origin.url("/status/404")
    body = sheet([(serial, f"SKU-{serial}", url) for serial in range(1, 20001)])
    outcome: list[object] = []

    def post() -> None:
        try:
            with fault_stack.client() as api:
                outcome.append(api.post("/api/upload", files={"file": ("big.csv", body)}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    uploader = threading.Thread(target=post)
    uploader.start()
    wait_until(lambda: db["sheet_chunks"].count_documents({}) > 0, what="staging to start")
    fault_stack.processes["api"].kill()
    uploader.join(30)
    assert outcome and isinstance(outcome[0], httpx.HTTPError), outcome
    fault_stack.processes.pop("api").wait()
    fault_stack.start_api()
    fault_stack.wait_healthy()

    # The upload never became a request, and its staged rows are swept away.
    assert db["requests"].count_documents({}) == 0
    assert db["products"].count_documents({}) == 0
    wait_until(
        lambda: db["sheet_chunks"].count_documents({}) == 0,
        timeout=30,
        what="abandoned chunks to be swept",
    )
    with fault_stack.client() as api:
        request_id = submit_batch(api, slow_origin, products=10, receiver=receiver)
    assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)


def test_a_poison_product_is_failed_after_max_attempts(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    with fault_stack.client() as api:
        request_id = submit_batch(api, slow_origin, products=20, poison_serial=7, receiver=receiver)
    status = assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)
    poison = next(p for p in status["products"] if p["serial_number"] == 7)
    assert poison["status"] == "failed"
    assert {e["code"] for e in poison["errors"]} == {"worker_crash"}
    assert poison["output_image_urls"] == [None, None, None]
    assert status["images_failed"] == 3
    assert status["images_done"] == 57
    stored = fault_stack.db()["products"].find_one({"request_id": request_id, "serial_number": 7})
    assert stored is not None and stored["attempts"] == 4  # 3 crashes, then the verdict


def test_sigterm_lets_a_worker_finish_what_it_holds(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    worker = fault_stack.processes.pop("worker")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0  # a warm shutdown, not a crash
    # Work was left: the request is still running in the database (the API's may be 1 s old).
    assert fault_stack.db()["requests"].find_one({"_id": request_id})["status"] == "in_progress"
    fault_stack.start_worker("worker-2", concurrency=2)
    assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)


def test_an_upload_while_redis_is_down_is_dispatched_once_it_is_back(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    redis = next(s for s in fault_stack.services if isinstance(s, EmbeddedRedis))
    redis.stop(kill=True)
    with fault_stack.client() as api:
        # Stored in MongoDB even though the dispatch message could not be sent.
        request_id = submit_batch(api, slow_origin, products=10, receiver=receiver)
        assert api.get(f"/api/status/{request_id}").json()["status"] == "pending"
    restarted = EmbeddedRedis(redis.data_dir, port=redis.port).start()
    fault_stack.services[fault_stack.services.index(redis)] = restarted
    assert_recovered(fault_stack, request_id)
    assert_one_completion_event(receiver, request_id)
