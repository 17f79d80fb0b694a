"""Peak RSS of each worker pool process while it compresses the 16 MP photo.

A fresh worker per setting, so every pool process's ``VmHWM`` covers only this batch. Products
carry several 16 MP images, because images of one product are decoded concurrently (up to
``PRODUCT_IMAGE_CONCURRENCY``) and that, not one decode, sets the peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.data import BIG_PHOTO, batch_csv
from bench.harness import Bench
from bench.procfs import peak_rss_mb


@dataclass
class MemoryResult:
    image_concurrency: int
    images_per_product: int
    idle_mb: float
    peak_mb_per_process: list[float]


def worker_peak(
    bench: Bench, concurrency: int, image_concurrencies: Sequence[int], products: int, images: int
) -> list[MemoryResult]:
    results = []
    for image_concurrency in image_concurrencies:
        parent = bench.start_worker(
            f"worker-16mp-p{image_concurrency}",
            concurrency,
            {"IMGBATCH_PRODUCT_IMAGE_CONCURRENCY": str(image_concurrency)},
        )
        children = parent.children()
        idle = max(peak_rss_mb(child.pid) for child in children)
        body = batch_csv(bench.origin.base_url, products, [BIG_PHOTO] * images, "mem")
        request_id = str(bench.upload(body)["request_id"])
        done = bench.wait_done(request_id, timeout=300)
        if done["images_failed"]:
            raise RuntimeError(f"16 MP batch had failures: {done}")
        results.append(
            MemoryResult(
                image_concurrency=image_concurrency,
                images_per_product=images,
                idle_mb=idle,
                peak_mb_per_process=[peak_rss_mb(child.pid) for child in children],
            )
        )
    return results
