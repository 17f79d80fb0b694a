"""A worker writes the products it finishes together (a flush: their final moves in one bulk
write, then one count on the request). Killed between the two, the batch still completes with
every image counted exactly once: the reconciler completes the flush's count under the same
keys, and nothing that was final is run again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import (
    FaultStack,
    assert_one_completion_event,
    assert_progress_resumes,
    assert_recovered,
    running_fault_stack,
    submit_batch,
    worker_pids,
)
from tests.support.logs import log_events
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

AT_COUNT = "crash-at-count"
MARKED = 20


@pytest.fixture
def count_crash_stack(tmp_path: Path) -> Iterator[FaultStack]:
    yield from running_fault_stack(tmp_path, IMGBATCH_TEST_CRASH_AT_COUNT_MARKER=AT_COUNT)


def test_a_pool_process_killed_between_a_flush_and_its_count(
    count_crash_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    stack = count_crash_stack
    pool = worker_pids(stack) - {stack.processes["worker"].pid}
    with stack.client() as api:
        request_id = submit_batch(
            api, slow_origin, receiver=receiver, poison_serial=MARKED, marker=AT_COUNT
        )
    # The pool process whose flush held the marked product killed itself after its final move.
    wait_until(
        lambda: not pool <= worker_pids(stack), timeout=120, what="a pool process to be killed"
    )
    assert_progress_resumes(stack, request_id, since=time.monotonic())
    # Completed, every image counted exactly once, none failed, every output served whole.
    assert_recovered(stack, request_id)
    assert_one_completion_event(stack, receiver, request_id)
    marked = stack.db()["products"].find_one({"request_id": request_id, "serial_number": MARKED})
    # Final before the kill, and kept: never run again, so its count was completed by the
    # reconciler, from the key the flush left on it.
    assert (marked["status"], marked["attempts"], marked["count_state"]) == ("completed", 1, "done")
    recounted = [
        event
        for event in log_events(stack.data_dir / "logs" / "worker.log")
        if event["event"] == "request.recounted" and event.get("recounted", 0) > 0
    ]
    assert recounted
