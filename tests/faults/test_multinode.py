"""No shared disk: the API and beat in one place, two worker "nodes" elsewhere, outputs on S3.

Each node is a worker process with its own working directory, temporary directory and data
directory, none of them the API's; the only things the three places share are MongoDB, Redis
and the S3 server. One node is killed outright mid-batch and the other finishes the batch.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgbatch.cli.embedded import EmbeddedSeaweedFS, free_port
from imgbatch.core.settings import Settings
from tests.faults.conftest import (
    FAULT_ENV,
    FaultStack,
    assert_one_completion_event,
    assert_recovered,
    submit_batch,
    wait_for_progress,
    wait_until,
)
from tests.support.origin import Origin
from tests.support.receiver import Receiver

NODES = ("worker-node-a", "worker-node-b")


@pytest.fixture
def multinode(
    tmp_path: Path, seaweedfs: EmbeddedSeaweedFS, s3_settings: Settings
) -> Iterator[tuple[FaultStack, dict[str, Path]]]:
    api_port = free_port()
    env = {
        **FAULT_ENV,
        **seaweedfs.credentials_env(),
        "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
    }
    settings = s3_settings.model_copy(update={"mongodb_url": None, "redis_url": None})
    stack = FaultStack(settings, data_dir=tmp_path / "api", api_port=api_port, extra_env=env)
    homes: dict[str, Path] = {}
    try:
        stack.start_services()
        stack.start_api()
        stack.start_beat()
        for name in NODES:
            home = tmp_path / name
            (home / "tmp").mkdir(parents=True)
            node_env = {"IMGBATCH_DATA_DIR": str(home / "data"), "TMPDIR": str(home / "tmp")}
            stack.start_worker(name, concurrency=2, env=node_env, cwd=home, own_group=True)
            homes[name] = home
        stack.wait_healthy()
        yield stack, homes
    finally:
        stack.stop()


def test_two_nodes_without_a_shared_disk_and_one_killed_at_30_percent(
    multinode: tuple[FaultStack, dict[str, Path]], slow_origin: Origin, receiver: Receiver
) -> None:
    stack, homes = multinode
    with stack.client() as api:
        request_id = submit_batch(api, slow_origin, products=100, receiver=receiver)
    wait_for_progress(stack, request_id, 0.3)
    # Both nodes hold part of the batch when one of them goes.
    for name in NODES:
        wait_until(lambda name=name: bool(stack.stored_writes(name)), what=f"{name} to store")
    victim, survivor = NODES
    worker = stack.processes.pop(victim)
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool children at once
    worker.wait(10)
    killed_at = time.monotonic()
    assert stack.db()["requests"].find_one({"_id": request_id})["status"] == "in_progress"
    before = len(stack.stored_writes(survivor))

    status = assert_recovered(stack, request_id)
    assert_one_completion_event(receiver, request_id)
    assert status["images_total"] == 300
    assert status["images_failed"] == 0
    assert len(stack.stored_writes(survivor)) > before  # the survivor finished the rest
    # Every output is in the bucket and nowhere on a disk: not the API's, not a node's.
    for home in (stack.data_dir, *homes.values()):
        assert not list(home.rglob("*.jpg")), home
    print(f"one of two nodes SIGKILLed: finished in {time.monotonic() - killed_at:.1f}s")
