"""Status-endpoint load generator, run as a second process: ``python -m bench.loadgen URL``.

Open loop: request ``i`` is sent at ``start + i / rate`` whatever happened to earlier ones, so
a slow server cannot slow the generator down and hide its own latency (coordinated omission).
Bounded by ``--duration`` and ``--max-requests``; loopback URLs only. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from imgbatch.core.settings import Settings


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# A request not answered within this long counts as an error with this latency: a server that
# falls behind an open-loop load builds an unbounded queue, and the run must still end.
_REQUEST_TIMEOUT = 10.0
_WARM_AFTER = 1.0


async def generate(url: str, rate: float, duration: float, max_requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    # (seconds into the run it was sent, latency ms) of every request: the slowest tell whether
    # the tail comes in bursts (a periodic reload the loop waits on) or spread (the scheduler).
    timeline: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    # aiohttp, not httpx: with 64 pooled connections httpcore re-examines every one of them on
    # each request, and the generator itself cost 5.6 ms of CPU per request, 0.6 of a core at
    # 110 req/s, queueing the API behind it on two cores (bench/README.md, target 4).
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT)
    # The key comes as the CLI client's does (IMGBATCH_API_KEY), never on the command line.
    key = Settings().api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else None
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as client:

        async def one() -> None:
            sent = time.perf_counter()
            try:
                async with client.get(url) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                latencies.append(_REQUEST_TIMEOUT * 1000)
                return
            latencies.append((time.perf_counter() - sent) * 1000)
            timeline.append((sent - start, latencies[-1]))
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1

        tasks = []
        start = time.perf_counter()
        for index in range(max_requests):
            due = start + index / rate
            if due - start > duration:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        elapsed = time.perf_counter() - start
        await asyncio.wait(tasks, timeout=_REQUEST_TIMEOUT + 5)
        for task in tasks:
            task.cancel()
    failed = sum(errors.values())
    return {
        "sent": len(tasks),
        "answered": len(latencies),
        "ok": len(latencies) - failed,
        "errors": errors,
        "achieved_rate": len(tasks) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "timeout_ms": _REQUEST_TIMEOUT * 1000,
        # Requests sent after the first second: every one sent while the first (cold) load ran
        # waits for it, and at 200 req/s those alone can be the p99 of a 15 s run.
        "p99_ms_warm": percentile([ms for at, ms in timeline if at >= _WARM_AFTER], 0.99),
        "slowest": [
            [round(at, 3), round(ms, 1)] for at, ms in sorted(timeline, key=lambda t: -t[1])[:30]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load generator only targets loopback")
    print(json.dumps(asyncio.run(generate(args.url, args.rate, args.duration, args.max_requests))))


if __name__ == "__main__":
    main()
