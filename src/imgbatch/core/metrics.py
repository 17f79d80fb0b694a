"""Every Prometheus metric imgbatch exports, declared once; the names are a contract for dashboards.

The API's ``GET /metrics`` sums them across every process of the stack (the API and each Celery
pool process): prometheus_client's multiprocess mode, switched on by ``PROMETHEUS_MULTIPROC_DIR``
in the environment *before prometheus_client is first imported*. The stack sets that variable
for its children and wipes the directory at start (cli/stack.py); this module is imported first
by the API and the worker, and refuses to load if prometheus_client was imported too early,
because each process would then count in memory where no scrape can see it.

Without the variable (tests that import code in-process, a single process), metrics live in
memory and the scrape serves this process's own values.

Gauges that depend on the state of the world (requests in progress, queue depths) are not
declared here: the API reads them from MongoDB and Redis at scrape time (see
:func:`gauge_family`), which is right across processes and restarts by construction. So there
are no ``livesum`` gauges, whose values a SIGKILLed process would leave behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imgbatch.core.errors import ImageErrorCode
from imgbatch.core.settings import METRICS_DIR_ENV, metrics_multiprocess_dir

MULTIPROCESS = metrics_multiprocess_dir() is not None
if MULTIPROCESS and not getattr(values.ValueClass, "_multiprocess", False):
    raise RuntimeError(
        f"prometheus_client was imported before {METRICS_DIR_ENV} was set: "
        "import imgbatch.core.metrics first in the process's entry module"
    )

# --- images ----------------------------------------------------------------------------------
IMAGES = Counter(
    "imgbatch_images",
    "Images that reached a final state: done (processed and stored), failed (with its error "
    "code), reused (an existing output served the image, so no work was done: the same bytes "
    "done before, a source that answered 304, or an output kept from an earlier run).",
    ["outcome", "code"],
)
IMAGE_PHASE_SECONDS = Histogram(
    "imgbatch_image_phase_seconds",
    "Time one image spent in each phase of processing.",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DOWNLOAD_BYTES = Counter("imgbatch_download_bytes", "Bytes of source images downloaded.")
OUTPUT_BYTES = Counter("imgbatch_output_bytes", "Bytes of output images stored.", ["format"])

# --- requests --------------------------------------------------------------------------------
REQUESTS = Counter(
    "imgbatch_requests",
    "Requests that moved to a final state (a retried request that completes again counts again).",
    ["status"],
)

# --- webhooks and repairs ----------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "imgbatch_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered (2xx), retried (another attempt is "
    "scheduled), failed (given up: out of attempts, 410, or its subscriber or request is gone).",
    ["outcome"],
)
RECONCILER_REPAIRS = Counter(
    "imgbatch_reconciler_repairs",
    "Repairs the reconciler made, by kind.",
    ["kind"],
)

# --- HTTP ------------------------------------------------------------------------------------
HTTP_REQUEST_SECONDS = Histogram(
    "imgbatch_http_request_duration_seconds",
    "API request duration by route template (never the raw path) and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Every known series starts at 0, so a dashboard's rate() sees the first increment and a missing
# series means a missing process, not "nothing happened yet".
for _outcome in ("done", "reused"):
    IMAGES.labels(_outcome, "")
for _code in ImageErrorCode:
    IMAGES.labels("failed", _code.value)
for _phase in ("download", "decode", "encode", "store"):
    IMAGE_PHASE_SECONDS.labels(_phase)
# The output formats of imaging.profiles.OutputFormat (core cannot import imaging).
for _format in ("jpeg", "webp", "avif", "png"):
    OUTPUT_BYTES.labels(_format)
for _status in ("completed", "failed", "cancelled"):
    REQUESTS.labels(_status)
for _outcome in ("delivered", "retried", "failed"):
    WEBHOOK_DELIVERIES.labels(_outcome)
for _kind in (
    "redispatched",
    "requeued",
    "notice_resent",
    "upload_swept",
    "lease_taken_back",
    "broker_lost",
):
    RECONCILER_REPAIRS.labels(_kind)


# --- the supervisor of `imgbatch run` ----------------------------------------------------------
# The supervisor writes its counts to this file in the multiprocess directory and the scrape reads
# them: its own process may have imported prometheus_client before that directory existed (inside
# pytest, or `imgbatch demo`'s directory of its own), so it cannot count through an mmap value.
STACK_RESTARTS_FILE = "stack-restarts.json"
STACK_RESTARTS = "imgbatch_stack_restarts"


def write_stack_restarts(directory: Path, restarts: Mapping[str, int]) -> None:
    """Record how often the supervisor restarted each process (every supervised name, 0 too)."""
    partial = directory / f".{STACK_RESTARTS_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(dict(restarts)))
    # A scrape reads the whole old file or the whole new one, never half of one.
    partial.replace(directory / STACK_RESTARTS_FILE)


def _stack_restarts_family(directory: Path) -> Iterator[Metric]:
    try:
        restarts: dict[str, int] = json.loads((directory / STACK_RESTARTS_FILE).read_text())
    except FileNotFoundError:
        return  # no supervisor: compose, or a stack started by hand
    family = CounterMetricFamily(
        STACK_RESTARTS,
        "Times the supervisor of `imgbatch run` restarted a process of the stack after it exited "
        "unexpectedly, by process (api, worker, worker-webhooks, beat, mongodb, redis, seaweedfs).",
        labels=["process"],
    )
    for process, count in sorted(restarts.items()):
        family.add_metric([process], count)
    yield family


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty ``path`` before any process of a stack starts: files left from an earlier run would
    be summed in, and a reused pid would resume counting from its old file."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _Forward(Collector):
    """This process's in-memory metrics, without registering anything into the global registry
    (two apps built in one test process would clash)."""

    def collect(self) -> Iterator[Metric]:
        return iter(REGISTRY.collect())


def gauge_family(
    name: str, documentation: str, samples: dict[tuple[str, ...], float], labels: list[str]
) -> GaugeMetricFamily:
    """A gauge computed at scrape time (from MongoDB or Redis), to pass to :func:`render`."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in samples.items():
        family.add_metric(list(label_values), value)
    return family


def processes_registry() -> CollectorRegistry:
    """A registry that collects every process's metrics (this process's own without the
    multiprocess directory), as prometheus_client's multiprocess mode documents: a registry of
    its own, never the global one that the metrics above register into."""
    registry = CollectorRegistry()
    directory = metrics_multiprocess_dir()
    if directory is not None:
        # It globs and reads the *.db files on every collect(): cheap (a few ms for dozens).
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        registry.register(_Families(_stack_restarts_family(directory)))
    else:
        registry.register(_Forward())
    return registry


def render(scraped: Iterable[Metric] = ()) -> bytes:
    """The Prometheus text exposition: every process's metrics summed, plus ``scraped``."""
    registry = processes_registry()
    registry.register(_Families(scraped))
    return generate_latest(registry)
