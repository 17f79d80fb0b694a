"""Status latency with no concurrent load, one request at a time, after the main batch.

Splits the cost of ``GET /api/status/{id}``: the default page (100 products) against
``limit=1`` (the request document and one product), so the lead can see which part is slow.
"""

from __future__ import annotations

import time

from bench.harness import Bench
from bench.loadgen import percentile


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
