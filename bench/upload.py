"""Accepting a 100k-row CSV: time to the 202 and the API process's RSS growth meanwhile.

Run against an API with no worker, so the dispatcher cannot start on the sheet and the
numbers are the upload path alone (the 100k products are never processed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from bench.data import DEFAULT_PHOTOS, batch_csv
from bench.harness import Bench
from bench.procfs import peak_rss_mb


@dataclass
class UploadResult:
    rows: int
    csv_mb: float
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float

    @property
    def growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb


def accept(bench: Bench, rows: int) -> UploadResult:
    api = psutil.Process(bench.stack.processes["api"].pid)
    body = batch_csv(bench.origin.base_url, rows, DEFAULT_PHOTOS, "upload")
    # One small upload first, so imports and connection pools are warm, as in a running service.
    bench.upload(batch_csv(bench.origin.base_url, 2, DEFAULT_PHOTOS, "warm"))
    before = api.memory_info().rss / 2**20
    started = time.perf_counter()
    accepted = bench.upload(body, "large.csv")
    seconds = time.perf_counter() - started
    if accepted["products"] != rows:
        raise RuntimeError(f"accepted {accepted['products']} of {rows} rows")
    return UploadResult(
        rows=rows,
        csv_mb=len(body) / 2**20,
        seconds=seconds,
        rss_before_mb=before,
        rss_peak_mb=peak_rss_mb(api.pid),
        rss_after_mb=api.memory_info().rss / 2**20,
    )
