"""Kill things mid-batch, at the default lease, reconcile and broker settings: the batch still
completes with every image counted once, none failed and every output served, and progress
moves again within RECOVERY_BOUND (30 s) of the killed process being back."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from imgbatch.cli.embedded import EmbeddedMongo, EmbeddedRedis
from imgbatch.core.settings import Settings
from tests.faults.conftest import (
    FAULT_ENV,
    IMAGES_PER_PRODUCT,
    RECOVERY_BOUND,
    FaultStack,
    assert_one_completion_event,
    assert_pool_free,
    assert_progress_resumes,
    assert_recovered,
    assert_run_again,
    batch_in_flight,
    freeze_holder,
    submit_batch,
    wait_until,
    worker_pids,
)
from tests.support.client import sheet
from tests.support.origin import Origin
from tests.support.receiver import Receiver


def _finished_within(
    stack: FaultStack, request_id: str, serials: list[int], since: datetime
) -> float:
    """Each product a killed process held was finished again within the bound of ``since``;
    returns how long the last one took."""
    longest = 0.0
    for serial in serials:
        doc = stack.db()["products"].find_one({"request_id": request_id, "serial_number": serial})
        assert doc is not None and doc["finished_at"] is not None
        took = (doc["finished_at"] - since).total_seconds()
        assert took < RECOVERY_BOUND, f"product {serial} finished {took:.1f} s after"
        longest = max(longest, took)
    return round(longest, 1)


def _restart(
    stack: FaultStack, service: EmbeddedMongo | EmbeddedRedis, *, data_dir: Path | None = None
) -> float:
    """Start a killed embedded server again on its port, over its data unless ``data_dir`` is
    given; returns when it is back."""
    restarted = type(service)(data_dir or service.data_dir, port=service.port).start()
    stack.services[stack.services.index(service)] = restarted
    return time.monotonic()


def _recovers(stack: FaultStack, request_id: str, receiver: Receiver, *, since: float) -> float:
    """The fault tests' end: progress within the bound of ``since``, the batch whole, one
    completion webhook. Returns the longest stall after ``since``."""
    stall = assert_progress_resumes(stack, request_id, since=since)
    assert_recovered(stack, request_id)
    assert_one_completion_event(stack, receiver, request_id)
    return stall


def _redis_health(stack: FaultStack) -> str:
    with stack.client() as api:
        return str(api.get("/api/health").json()["redis"])


def test_sigkill_of_a_pool_process_that_holds_work(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    main = fault_stack.processes["worker"].pid
    # A pool process named as the holder of a product's lease, killed while it holds it.
    victim, held, killed_wall = freeze_holder(
        fault_stack, request_id, worker_pids(fault_stack) - {main}
    )
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    stall = assert_progress_resumes(fault_stack, request_id, since=killed_at)
    assert_recovered(fault_stack, request_id)
    rerun = assert_run_again(fault_stack, request_id, held, killed_wall)
    redone = _finished_within(fault_stack, request_id, rerun, killed_wall)
    assert_one_completion_event(fault_stack, receiver, request_id)
    print(f"pool process SIGKILL: held {held}, run again {rerun} {redone}s after; stall {stall}s")


def test_sigkill_of_a_whole_worker_process_group_then_a_new_worker(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    pids = worker_pids(fault_stack)
    worker = fault_stack.processes.pop("worker")
    _, held, killed_wall = freeze_holder(fault_stack, request_id, pids, group=worker.pid)
    # The main process and its pool at once, as the out-of-memory killer or a lost node does.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    assert fault_stack.db()["requests"].find_one({"_id": request_id})["status"] == "in_progress"

    fault_stack.start_ready_worker("worker-2")
    back_at, back_wall = time.monotonic(), datetime.now(UTC)
    stall = assert_progress_resumes(fault_stack, request_id, since=back_at)
    assert_recovered(fault_stack, request_id)
    rerun = assert_run_again(fault_stack, request_id, held, killed_wall)
    redone = _finished_within(fault_stack, request_id, rerun, back_wall)
    assert_one_completion_event(fault_stack, receiver, request_id)
    print(f"worker group SIGKILL: held {held} done {redone}s after the new worker; stall {stall}s")


def test_redis_killed_and_restarted_empty(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    redis = next(s for s in fault_stack.services if isinstance(s, EmbeddedRedis))
    redis.stop(kill=True)
    # An outage, not a blip: the API sees it too.
    wait_until(lambda: _redis_health(fault_stack) == "unavailable", what="Redis to be missed")
    # Restarted over an empty directory, so its append-only file is gone and every queued message
    # with it: a lost volume, the worst case (a restart over its data keeps them, tests/cli).
    back_at = _restart(fault_stack, redis, data_dir=redis.data_dir.with_name("redis-empty"))
    stall = _recovers(fault_stack, request_id, receiver, since=back_at)
    print(f"Redis restarted empty: longest stall after the restart {stall}s")


def test_mongodb_killed_and_restarted_on_the_same_data(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    with fault_stack.client() as api:
        mongo = next(s for s in fault_stack.services if isinstance(s, EmbeddedMongo))
        mongo.stop(kill=True)
        during = api.get(f"/api/status/{request_id}")
        assert during.status_code == 503
        assert during.headers["retry-after"] == "5"
        assert "database" in during.json()["detail"]
        assert api.get("/api/health").json()["mongodb"] == "unavailable"
    # A database outage is nobody's image's fault: none failed (assert_recovered).
    stall = _recovers(fault_stack, request_id, receiver, since=_restart(fault_stack, mongo))
    # Every run of the outage ended: none is left renewing leases (worker.products._keep_leases).
    assert_pool_free(fault_stack)
    print(f"MongoDB restarted: longest stall after the restart {stall}s")


def test_api_killed_mid_batch_and_started_again(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    fault_stack.processes["api"].kill()
    killed_at = time.monotonic()
    fault_stack.processes.pop("api").wait()
    # The batch is the workers' business: it moves on while no API answers.
    stall = assert_progress_resumes(fault_stack, request_id, since=killed_at)
    fault_stack.start_api()
    fault_stack.wait_healthy()
    _recovers(fault_stack, request_id, receiver, since=time.monotonic())
    print(f"API SIGKILL: longest stall {stall}s")


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
    assert_progress_resumes(fault_stack, request_id, since=time.monotonic())
    assert_recovered(fault_stack, request_id, products=10)
    assert_one_completion_event(fault_stack, receiver, request_id)


def test_a_poison_product_is_failed_after_max_attempts(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    with fault_stack.client() as api:
        request_id = submit_batch(api, slow_origin, products=20, poison_serial=7, receiver=receiver)
    # Each of its three crashes is seen at once (its holder is gone), not after a lease.
    assert_progress_resumes(fault_stack, request_id, since=time.monotonic())
    status = assert_recovered(fault_stack, request_id, products=20, failed=3)
    assert_one_completion_event(fault_stack, receiver, request_id)
    poison = next(p for p in status["products"] if p["serial_number"] == 7)
    assert poison["status"] == "failed"
    assert {e["code"] for e in poison["errors"]} == {"worker_crash"}
    assert poison["output_image_urls"] == [None, None, None]
    stored = fault_stack.db()["products"].find_one({"request_id": request_id, "serial_number": 7})
    assert stored is not None and stored["attempts"] == 4  # 3 crashes, then the verdict


def warm_shutdown_bound() -> float:
    """How long a warm shutdown may take: what the worker holds, at its worst.

    Each pool process holds its prefetch of tasks (one), a task holds PRODUCTS_PER_TASK
    products, and each of their images may take its whole download deadline and its decode's
    CPU limit; the processes finish theirs side by side. Plus the shutdown itself."""
    defaults = Settings.model_fields
    prefetch = 1  # worker_prefetch_multiplier (worker/app.py)
    images = int(FAULT_ENV["IMGBATCH_PRODUCTS_PER_TASK"]) * IMAGES_PER_PRODUCT
    per_image = float(FAULT_ENV["IMGBATCH_DOWNLOAD_DEADLINE"]) + float(
        defaults["decode_cpu_seconds"].default
    )
    return prefetch * images * per_image + 10.0


def test_sigterm_lets_a_worker_finish_what_it_holds(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver)
    worker = fault_stack.processes.pop("worker")
    worker.send_signal(signal.SIGTERM)
    # A warm shutdown, not a crash, however busy the machine: bounded by what it holds.
    assert worker.wait(warm_shutdown_bound()) == 0
    # Work was left: the request is still running in the database (the API's may be 1 s old).
    assert fault_stack.db()["requests"].find_one({"_id": request_id})["status"] == "in_progress"
    fault_stack.start_ready_worker("worker-2")
    _recovers(fault_stack, request_id, receiver, since=time.monotonic())


def test_an_upload_while_redis_is_down_is_dispatched_once_it_is_back(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    redis = next(s for s in fault_stack.services if isinstance(s, EmbeddedRedis))
    redis.stop(kill=True)
    with fault_stack.client() as api:
        # Stored in MongoDB even though the dispatch message could not be sent.
        request_id = submit_batch(api, slow_origin, products=10, receiver=receiver)
        assert api.get(f"/api/status/{request_id}").json()["status"] == "pending"
    assert_progress_resumes(fault_stack, request_id, since=_restart(fault_stack, redis))
    assert_recovered(fault_stack, request_id, products=10)
    assert_one_completion_event(fault_stack, receiver, request_id)
