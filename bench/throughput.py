"""End-to-end batches through the real stack: images/s, where the CPU went, and (for the main
batch) the status load and the small request submitted behind it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from bench import dbops, profile
from bench.data import batch_csv, images_per_product
from bench.dbops import DbOps
from bench.harness import Bench, cpu_seconds

_POLL = 0.2


@dataclass
class LoadSpec:
    rate: float
    duration: float


@dataclass
class BatchResult:
    label: str
    request_id: str
    concurrency: int
    image_concurrency: int
    products: int
    images: int
    failed: int
    seconds: float
    images_per_s: float
    dispatch_seconds: float
    cpu_seconds_per_s: dict[str, float]
    status_load: dict[str, Any] | None = None
    fairness: dict[str, Any] | None = None
    profiles: dict[str, Any] = field(default_factory=dict)
    pool_threads_seconds: dict[str, float] = field(default_factory=dict)
    profile_name: str = "default"
    db: DbOps | None = None


def _pool_threads(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds of the pool processes, by thread: the main thread runs the event loop
    (downloads, MongoDB and Celery calls), the others ``asyncio.to_thread`` work (the codec
    and writing outputs)."""
    split = {"worker event loop": 0.0, "worker codec threads": 0.0}
    for name, process in processes.items():
        if "-child-" not in name:
            continue
        try:
            threads = process.threads()
        except psutil.NoSuchProcess:
            continue
        for thread in threads:
            role = "worker event loop" if thread.id == process.pid else "worker codec threads"
            split[role] += thread.user_time + thread.system_time
    return split


def _elapsed(doc: dict[str, Any], start: str, end: str) -> float:
    return float((doc[end] - doc[start]).total_seconds())


def _group(cpu: dict[str, float]) -> dict[str, float]:
    """Fold the pool children into one ``worker pool`` figure; keep the other roles."""
    grouped: dict[str, float] = {}
    for name, seconds in cpu.items():
        if "-child-" in name:
            role = "worker pool"
        elif name.startswith("worker"):
            role = "worker parent"
        else:
            role = name
        grouped[role] = grouped.get(role, 0.0) + seconds
    return grouped


class _Probe:
    """The small urgent request: 1 product x the product's photos, uploaded mid-batch."""

    def __init__(self, bench: Bench, photos: Sequence[str], tag: str, at: float) -> None:
        self.bench, self.photos, self.tag, self.at = bench, photos, tag, at
        self.request_id: str | None = None
        self.done = False
        self.products_ahead = 0

    def step(self, big: dict[str, Any]) -> None:
        if self.request_id is None:
            finished = big["images_done"] + big["images_failed"]
            if big["status"] == "in_progress" and finished >= self.at * big["images_total"]:
                self.products_ahead = big["products_total"] - big["products_done"]
                body = batch_csv(self.bench.origin.base_url, 1, self.photos, f"{self.tag}-urgent")
                self.request_id = str(self.bench.upload(body)["request_id"])
        elif not self.done:
            self.done = self.bench.progress(self.request_id)["status"] in ("completed", "failed")

    def result(self) -> dict[str, Any] | None:
        if self.request_id is None:
            return None
        doc = self.bench.progress(self.request_id)
        return {
            "images": images_per_product(self.photos),
            "submitted_at_fraction": self.at,
            "products_ahead": self.products_ahead,
            "completed": doc.get("completed_at") is not None,
            "seconds": _elapsed(doc, "created_at", "completed_at")
            if doc.get("completed_at")
            else None,
        }


def run_batch(
    bench: Bench,
    label: str,
    products: int,
    photos: Sequence[str],
    *,
    concurrency: int,
    image_concurrency: int,
    timeout: float,
    load: LoadSpec | None = None,
    probe_at: float | None = None,
    profile_dir: Path | None = None,
    profile_seconds: float = 10.0,
    profile_name: str = "default",
    unique: bool = True,
) -> BatchResult:
    body = batch_csv(bench.origin.base_url, products, photos, label, unique=unique)
    mongodb_url, database = bench.stack.mongodb_url, bench.stack.settings.mongodb_database
    assert mongodb_url
    db_before = dbops.snapshot(mongodb_url, database)
    processes = bench.processes()
    # This process serves the origin (a thread) and polls: its CPU is taken from the same cores.
    processes["bench+origin"] = psutil.Process()
    cpu_before = cpu_seconds(processes)
    threads_before = _pool_threads(processes)
    started = time.monotonic()
    request_id = str(bench.upload(body, profile=profile_name)["request_id"])
    probe = _Probe(bench, photos, label, probe_at) if probe_at is not None else None
    loadgen: subprocess.Popen[bytes] | None = None
    profilers: list[profile.Recording] = []
    try:
        while True:
            big = bench.progress(request_id)
            if big["status"] in ("completed", "failed") and (probe is None or probe.done):
                break
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"batch {label} not done after {timeout:.0f}s: {big}")
            running = big["status"] == "in_progress"
            if load and loadgen is None and running:
                loadgen = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.loadgen",
                        f"{bench.stack.api_url}/api/status/{request_id}",
                        "--rate",
                        str(load.rate),
                        "--duration",
                        str(load.duration),
                        "--max-requests",
                        str(int(load.rate * load.duration)),
                    ],
                    stdout=subprocess.PIPE,
                    env={**os.environ, "IMGBATCH_API_KEY": bench.api_key},
                )
            if profile_dir and not profilers and running and big["products_done"] > 0:
                profilers = profile.start(bench, profile_dir / label, profile_seconds)
            if probe is not None:
                probe.step(big)
            time.sleep(_POLL)
        wall = time.monotonic() - started
        cpu_after = cpu_seconds(processes)
        threads_after = _pool_threads(processes)
        db_after = dbops.snapshot(mongodb_url, database)
        status_load = None
        if loadgen is not None:
            out, _ = loadgen.communicate(timeout=load.duration + 60 if load else 60)
            try:
                status_load = json.loads(out)
            except json.JSONDecodeError:
                status_load = {"error": f"load generator exited {loadgen.returncode}"}
        profiles = profile.summaries(profilers)
    finally:
        if loadgen is not None and loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()
        profile.stop(profilers)
    doc = bench.progress(request_id)
    seconds = _elapsed(doc, "created_at", "completed_at")
    used = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
    return BatchResult(
        label=label,
        request_id=request_id,
        concurrency=concurrency,
        image_concurrency=image_concurrency,
        products=products,
        images=int(doc["images_total"]),
        failed=int(doc["images_failed"]),
        seconds=seconds,
        images_per_s=int(doc["images_total"]) / seconds,
        dispatch_seconds=_elapsed(doc, "created_at", "dispatched_at"),
        cpu_seconds_per_s={k: v / wall for k, v in sorted(_group(used).items())},
        status_load=status_load,
        fairness=probe.result() if probe else None,
        profiles=profiles,
        pool_threads_seconds={k: threads_after[k] - threads_before[k] for k in threads_after},
        profile_name=profile_name,
        db=dbops.delta(db_before, db_after, int(doc["images_total"])),
    )


def sweep(
    bench: Bench,
    configs: Sequence[tuple[int, int]],
    products: int,
    photos: Sequence[str],
    timeout: float,
) -> list[BatchResult]:
    """The same batch under each (worker processes, images per product) setting."""
    results = []
    for concurrency, image_concurrency in configs:
        label = f"sweep-c{concurrency}-p{image_concurrency}"
        bench.start_worker(
            f"worker-c{concurrency}-p{image_concurrency}",
            concurrency,
            {"IMGBATCH_PRODUCT_IMAGE_CONCURRENCY": str(image_concurrency)},
        )
        results.append(
            run_batch(
                bench,
                label,
                products,
                photos,
                concurrency=concurrency,
                image_concurrency=image_concurrency,
                timeout=timeout,
            )
        )
    return results
