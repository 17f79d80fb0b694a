"""Status latency: with no concurrent load, one request at a time, after the main batch; and,
run alone (``python -m bench.status``), the main batch's status load on a batch of its own.

``serial_latency`` splits the cost of ``GET /api/status/{id}``: the default page (100 products)
against ``limit=1`` (the request document and one product), so the lead can see which part is
slow.

``python -m bench.status [--products 400] [--rate 200] [--duration 15]``: the main batch's
phase without the rest of ``make bench`` (target 7): its photo mix, worker and origin latency,
the open-loop load generator (``bench.loadgen``, auth on) polling the batch's status from the
moment it runs; then the latencies, the CPU of each role over the batch (cores busy) and the
API's CPU per status call, and the idle serial latencies. Read a run against one made the same
hour: compare ``PYTHONPATH=<other src>`` runs alternated.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import DEFAULT_PHOTOS, copy_photos, images_per_product
from bench.harness import Bench, running
from bench.loadgen import percentile
from imgbatch.core.settings import Settings


def serial_latency(bench: Bench, request_id: str, count: int = 100) -> dict[str, float]:
    result = {}
    for limit in (100, 1):
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            response = bench.client.get(f"/api/status/{request_id}", params={"limit": limit})
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        result[f"limit={limit} p50_ms"] = percentile(latencies, 0.5)
        result[f"limit={limit} p99_ms"] = percentile(latencies, 0.99)
    return result


def under_load(
    bench: Bench,
    products: int,
    *,
    rate: float,
    duration: float,
    concurrency: int,
    image_concurrency: int,
) -> dict[str, Any]:
    """The main batch's status load on a batch of ``products``: latencies and CPU by role."""
    from bench import throughput  # the phase's own batch runner; imports this module

    photos = list(DEFAULT_PHOTOS)
    bench.start_worker(
        "worker-status",
        concurrency,
        {"IMGBATCH_PRODUCT_IMAGE_CONCURRENCY": str(image_concurrency)},
    )
    batch = throughput.run_batch(
        bench,
        "status-load",
        products,
        photos,
        concurrency=concurrency,
        image_concurrency=image_concurrency,
        timeout=max(300.0, products * images_per_product(photos) / 2),
        load=throughput.LoadSpec(rate, duration),
    )
    load = batch.status_load or {}
    wall = batch.seconds
    api_cpu = batch.cpu_seconds_per_s.get("api", 0.0)
    return {
        "products": products,
        "images": batch.images,
        "seconds": wall,
        "images_per_s": batch.images_per_s,
        "load": load,
        "cores_busy": batch.cpu_seconds_per_s,
        # The API's CPU over the batch per status call answered (the calls are most of its work
        # during a batch; its own share of the batch's requests is in this figure too).
        "api_cpu_ms_per_call": (
            api_cpu * wall * 1000 / load["answered"] if load.get("answered") else float("nan")
        ),
        "idle": serial_latency(bench, batch.request_id),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.status", description=__doc__)
    parser.add_argument("--products", type=int, default=400, help="x3 images, the main mix")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=Settings().worker_concurrency)
    parser.add_argument("--image-concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.15, help="origin latency, s")
    parser.add_argument("--jitter", type=float, default=0.05)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imgbatch-status-") as tmp:
        work = Path(tmp)
        root = copy_photos(list(DEFAULT_PHOTOS), work / "photos")
        with running(
            work / "stack", root, latency=args.latency, jitter=args.jitter, bandwidth=None
        ) as bench:
            result = under_load(
                bench,
                args.products,
                rate=args.rate,
                duration=args.duration,
                concurrency=args.concurrency,
                image_concurrency=args.image_concurrency,
            )
    load = result["load"]
    print(
        f"status at {load.get('achieved_rate', 0):.0f} req/s during a batch of "
        f"{result['images']} images ({result['images_per_s']:.1f}/s), auth on: "
        f"p50 {load.get('p50_ms', float('nan')):.1f} ms, p99 {load.get('p99_ms', float('nan')):.1f}"
        f" ms (after the first second {load.get('p99_ms_warm', float('nan')):.1f} ms), max "
        f"{load.get('max_ms', float('nan')):.1f} ms, errors {load.get('errors')}"
    )
    print(f"API CPU per call {result['api_cpu_ms_per_call']:.2f} ms")
    print("cores busy: " + ", ".join(f"{k} {v:.2f}" for k, v in result["cores_busy"].items()))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
