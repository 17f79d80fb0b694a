"""No shared disk: the API and beat in one place, two worker "nodes" elsewhere, outputs on S3.

Each node is a worker process with its own working directory, temporary directory, data
directory and metrics directory, none of them the API's; the only things the three places share
are MongoDB, Redis and the S3 server. One node is killed outright mid-batch and the other
finishes the batch, at the default lease and reconcile settings.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from imgbatch.cli.embedded import EmbeddedSeaweedFS, free_port
from imgbatch.core.metrics import prepare_multiprocess_dir
from imgbatch.core.settings import METRICS_DIR_ENV, Settings
from tests.faults.conftest import (
    FAULT_ENV,
    IMAGES_PER_PRODUCT,
    FaultStack,
    assert_one_completion_event,
    assert_progress_resumes,
    assert_recovered,
    assert_run_again,
    freeze_holder,
    held_work,
    submit_batch,
    wait_for_progress,
    wait_until,
    worker_pids,
)
from tests.support.logs import log_events
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
            prepare_multiprocess_dir(home / "metrics")
            node_env = {
                "IMGBATCH_DATA_DIR": str(home / "data"),
                "TMPDIR": str(home / "tmp"),
                METRICS_DIR_ENV: str(home / "metrics"),
            }
            stack.start_worker(name, concurrency=2, env=node_env, cwd=home, own_group=True)
            homes[name] = home
        stack.wait_healthy()
        for name in NODES:
            stack.wait_ready(name)
        yield stack, homes
    finally:
        stack.stop()


def _images_counted(metrics_dir: Path) -> float:
    """Images a node counted in ``imgbatch_images``, summed over its own processes' files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == "imgbatch_images"
        for sample in family.samples
        if sample.name == "imgbatch_images_total"
    )


def _products_finished(log: Path, request_id: str) -> int:
    return sum(
        1
        for event in log_events(log)
        if event["event"] == "product.finished" and event.get("request_id") == request_id
    )


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
    # The node that holds work now goes: a fixed one may have no message left for it (the
    # other node's prefetch took them), and a kill of a node that holds nothing proves nothing.
    pids = {name: worker_pids(stack, name) for name in NODES}
    holder, _ = held_work(stack, request_id, pids[NODES[0]] | pids[NODES[1]])
    victim, survivor = NODES if holder in pids[NODES[0]] else (NODES[1], NODES[0])
    victim_pids = pids[victim]
    worker = stack.processes.pop(victim)
    _, held, killed_wall = freeze_holder(stack, request_id, victim_pids, group=worker.pid)
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool children at once
    killed_at = time.monotonic()
    worker.wait(10)
    assert stack.db()["requests"].find_one({"_id": request_id})["status"] == "in_progress"
    before = len(stack.stored_writes(survivor))

    # Nothing restarts the victim: the survivor takes its products over within the bound.
    stall = assert_progress_resumes(stack, request_id, since=killed_at)
    assert_recovered(stack, request_id, products=100)
    assert_run_again(stack, request_id, held, killed_wall)
    assert_one_completion_event(stack, receiver, request_id)
    assert len(stack.stored_writes(survivor)) > before  # the survivor finished the rest
    # Every output is in the bucket and nowhere on a disk: not the API's, not a node's.
    for home in (stack.data_dir, *homes.values()):
        assert not list(home.rglob("*.jpg")), home
    # Metrics are the node's own: the survivor's directory holds files of its own processes
    # only, and counts exactly the images it finished; the API's counts no image at all.
    survivor_files = list((homes[survivor] / "metrics").glob("*.db"))
    assert survivor_files
    assert not [f for f in survivor_files if int(f.stem.rsplit("_", 1)[-1]) in victim_pids]
    finished = _products_finished(stack.data_dir / "logs" / f"{survivor}.log", request_id)
    assert _images_counted(homes[survivor] / "metrics") == finished * IMAGES_PER_PRODUCT
    assert _images_counted(stack.metrics_dir) == 0
    print(f"one of two nodes SIGKILLed: longest stall {stall}s")
