"""Accepting a 100k-row CSV: time to the 202 and the API process's RSS growth meanwhile, set
against the stdlib floor for the same file in the same run.

Run against an API with no worker, so the dispatcher cannot start on the sheet and the
numbers are the upload path alone (the 100k products are never processed). The floor is what
Python's own ``csv`` and ``urllib.parse.urlsplit`` need to read the same bytes and split every
URL, with nothing checked or stored (issue 23: the upload within 2.5x of it).
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from bench.data import DEFAULT_PHOTOS, batch_csv
from bench.harness import Bench, cpu_seconds
from bench.procfs import peak_rss_mb

SUPPLIER_HOST = "https://images.supplier-cdn.example"
SECONDS_TARGET = 2.0
FLOOR_RATIO_TARGET = 2.5


@dataclass
class UploadResult:
    rows: int
    csv_mb: float
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    floor_seconds: float = float("nan")
    cpu_seconds: dict[str, float] | None = None

    @property
    def growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb

    @property
    def floor_ratio(self) -> float:
        return self.seconds / self.floor_seconds


def stdlib_floor(body: bytes) -> float:
    """Seconds for csv.reader and urlsplit alone over ``body`` (its URL column)."""
    started = time.perf_counter()
    for row in csv.reader(io.StringIO(body.decode())):
        for url in row[2].split(","):
            urlsplit(url)
    return time.perf_counter() - started


def accept(bench: Bench, rows: int) -> UploadResult:
    api = psutil.Process(bench.stack.processes["api"].pid)
    # A supplier's host, not the loopback origin: the sheet is never processed, and with the
    # default address policy (``running(private_networks=False)``) every URL's host is checked
    # as a user's would be.
    body = batch_csv(SUPPLIER_HOST, rows, DEFAULT_PHOTOS, "upload")
    # One small upload first, so imports and connection pools are warm, as in a running service.
    bench.upload(batch_csv(SUPPLIER_HOST, 2, DEFAULT_PHOTOS, "warm"))
    floors = [stdlib_floor(body)]
    before = api.memory_info().rss / 2**20
    processes = bench.processes()
    cpu_before = cpu_seconds(processes)
    started = time.perf_counter()
    accepted = bench.upload(body, "large.csv")
    seconds = time.perf_counter() - started
    cpu_after = cpu_seconds(processes)
    if accepted["products"] != rows:
        raise RuntimeError(f"accepted {accepted['products']} of {rows} rows")
    # Around the upload, so a neighbour's load weighs on both alike.
    floors.append(stdlib_floor(body))
    return UploadResult(
        rows=rows,
        csv_mb=len(body) / 2**20,
        seconds=seconds,
        rss_before_mb=before,
        rss_peak_mb=peak_rss_mb(api.pid),
        rss_after_mb=api.memory_info().rss / 2**20,
        floor_seconds=statistics.median(floors),
        cpu_seconds={k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after},
    )
