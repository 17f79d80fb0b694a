"""Live events under load: what 200 subscribers to one request's event stream cost the API.

The same small batch runs twice on the running stack: once with nobody watching, once with
``subscribers`` SSE clients on it (one asyncio client in this process, a connection each). The
API process's CPU per wall second is read for both; the difference divided by the subscribers
is what one watching browser costs. Each subscriber's final event is timed against the
request's ``completed_at`` (server clock, same machine), the issue's bound being 1 s.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from bench.data import batch_csv
from bench.harness import Bench
from bench.loadgen import percentile
from tests.support.events import Watched, watch_together

# One small photo per product: the point is the event traffic, not the codec.
_PHOTOS = ("astronaut.jpg",)


@dataclass
class EventsResult:
    subscribers: int
    products: int
    seconds_unwatched: float
    seconds_watched: float
    api_cpu_per_s_unwatched: float
    api_cpu_per_s_watched: float
    events_per_subscriber: float
    final_lag_p50_ms: float
    final_lag_max_ms: float

    @property
    def api_cpu_ms_per_subscriber_s(self) -> float:
        extra = self.api_cpu_per_s_watched - self.api_cpu_per_s_unwatched
        return extra * 1000 / self.subscribers


def run(bench: Bench, *, products: int, subscribers: int) -> EventsResult:
    api = psutil.Process(bench.stack.processes["api"].pid)
    base_s, base_cpu, _, _ = _batch(bench, api, products, "events-unwatched", 0)
    seconds, cpu, lags, events = _batch(bench, api, products, "events-watched", subscribers)
    return EventsResult(
        subscribers=subscribers,
        products=products,
        seconds_unwatched=base_s,
        seconds_watched=seconds,
        api_cpu_per_s_unwatched=base_cpu,
        api_cpu_per_s_watched=cpu,
        events_per_subscriber=events / max(1, len(lags)),
        final_lag_p50_ms=percentile(lags, 0.5) * 1000,
        final_lag_max_ms=max(lags) * 1000,
    )


def _batch(
    bench: Bench, api: psutil.Process, products: int, tag: str, subscribers: int
) -> tuple[float, float, list[float], int]:
    """(seconds, API CPU-seconds per second, each subscriber's final-event lag in seconds,
    events received by all subscribers)."""
    body = batch_csv(bench.origin.base_url, products, _PHOTOS, tag)
    cpu_before = sum(api.cpu_times()[:2])
    started = time.monotonic()
    request_id = bench.upload(body, f"{tag}.csv")["request_id"]
    watched: list[Watched] = []
    if subscribers:
        watched = asyncio.run(
            watch_together(bench.stack.api_url, request_id, subscribers, headers=bench.auth_headers)
        )
    doc = bench.wait_done(request_id, timeout=300)
    seconds = time.monotonic() - started
    cpu = (sum(api.cpu_times()[:2]) - cpu_before) / seconds
    completed_at = doc["completed_at"].timestamp()
    lags = [w.final_at - completed_at for w in watched]
    return seconds, cpu, lags, sum(w.events for w in watched)
