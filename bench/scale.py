"""Scale curve (issue 16, target 5): the same small-image batch at 1k, 10k and 50k images.

One stack with a fast origin (no latency, no jitter) and one worker, started once, so memory
that grows from one batch to the next is visible across sizes. One image per product: rows,
products and images are then the same number, and every per-product cost that could grow
with a request (MongoDB documents, status pages, CSV rows) is paid once per image, the
hardest case. Every URL is ``/unique/...``, so each image is really downloaded and rendered.

Per size:

- images/s on the server's clock (``created_at -> completed_at`` of the request document);
- RSS (``VmRSS``) of the API process and of each worker pool process, sampled every
  ``_SAMPLE_S`` from a thread: the maximum during the batch and the value at its end. Not
  ``VmHWM``: that is a high-water mark over a process's lifetime, so it could not tell the
  10k batch's peak from the 1k batch's;
- after completion, every status page (``GET /api/status/{id}`` at the largest ``limit`` the
  API accepts, following ``offset`` to ``products_total``) and the result CSV
  (``GET /api/download/{id}``, streamed), each as rows per second of wall time on this client:
  the status pages' GETs (each page parsed after its clock stops), the files' lines counted
  as they stream.

``python -m bench.scale [--scale 1000,10000,50000] [--quick]`` runs this phase alone.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the venv
from PIL import Image

from bench.data import CORPUS, batch_csv
from bench.harness import Bench, cpu_seconds, running
from bench.report import table as render_table
from bench.report import verdict
from imgbatch.core.settings import Settings

DEFAULT_SIZES = (1000, 10_000, 50_000)
QUICK_SIZES = (200, 1000)
PHOTO = "scale_small.jpg"
# The largest page GET /api/status accepts (api/requests.py: ``limit`` le=1000).
STATUS_PAGE_LIMIT = 1000
_SAMPLE_S = 0.5
_WARMUP_IMAGES = 100
# Verdicts. RSS is "flat" if the largest batch's peak is within 20 % + 20 MB of the smallest
# batch's: allocator slack and caches that fill once, not memory that grows with the batch.
RATE_SPREAD = 1.15
RSS_FACTOR, RSS_SLACK_MB = 1.2, 20.0
ROWS_PER_S = 20_000.0
# Issue 23: a completed request's result files are streamed bytes.
FILE_ROWS_PER_S = 100_000.0


@dataclass
class ScalePoint:
    images: int
    products: int
    failed: int
    seconds: float
    images_per_s: float
    dispatch_seconds: float
    # CPU ms per image during the batch by role (worker pool, mongodb, api, all): the cost
    # per image, which the machine's other load does not change as it changes images/s.
    cpu_ms_per_image: dict[str, float]
    api_rss_peak_mb: float
    api_rss_end_mb: float
    pool_rss_peak_mb: dict[str, float]  # by pool pid: max sampled during the batch
    pool_rss_end_mb: dict[str, float]  # by pool pid: at completion
    mongodb_rss_end_mb: float
    status_pages: int
    status_seconds: float
    status_rows_per_s: float
    csv_rows: int
    csv_mb: float
    csv_seconds: float
    csv_rows_per_s: float
    # CPU microseconds per row while reading, by process: what the rows/s would be on cores
    # nobody else uses (the machine is shared, so wall time alone can mislead).
    status_cpu_us_per_row: dict[str, float]
    csv_cpu_us_per_row: dict[str, float]
    # Issue 23: the result files are written once after completion; the reads above and below
    # wait for them (files_seconds: from the end of the batch until the CSV is a stored file).
    files_seconds: float
    jsonl_rows: int
    jsonl_mb: float
    jsonl_rows_per_s: float
    jsonl_cpu_us_per_row: dict[str, float]
    api_rss_reads_peak_mb: float  # sampled while the status pages and the CSV were read
    mongodb_rss_reads_peak_mb: float

    @property
    def api_peak_mb(self) -> float:
        """The API's peak over the batch and the reads after it (both are its work)."""
        return max(self.api_rss_peak_mb, self.api_rss_reads_peak_mb)

    @property
    def pool_peak_mb(self) -> float:
        return max(self.pool_rss_peak_mb.values(), default=float("nan"))

    @property
    def pool_end_mb(self) -> float:
        return max(self.pool_rss_end_mb.values(), default=float("nan"))


@dataclass
class ScaleResult:
    photo: str
    photo_px: tuple[int, int]
    photo_bytes: int
    concurrency: int
    image_concurrency: int
    baseline_api_rss_mb: float  # after the warm-up batch, before the first measured one
    baseline_pool_rss_mb: dict[str, float]
    points: list[ScalePoint] = field(default_factory=list)

    @property
    def rate_spread(self) -> float:
        rates = [p.images_per_s for p in self.points]
        return max(rates) / min(rates) if rates else float("nan")

    def rss_flat(self, peak: str) -> bool | None:
        if len(self.points) < 2:
            return None
        first, last = self.points[0], self.points[-1]
        return bool(getattr(last, peak) <= getattr(first, peak) * RSS_FACTOR + RSS_SLACK_MB)


def write_photo(root: Path, size: tuple[int, int] = (200, 150)) -> str:
    """A small JPEG (200x150 by default) from a corpus photo, so the codec costs next to nothing
    and the curve shows the per-image and per-request overheads."""
    root.mkdir(parents=True, exist_ok=True)
    with Image.open(CORPUS / "chelsea.jpg") as source:
        source.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(
            root / PHOTO, "JPEG", quality=85
        )
    return PHOTO


class _Sampler:
    """RSS of the API, the worker's pool processes and MongoDB every ``_SAMPLE_S``, in a
    thread; ``window()`` returns the max since the previous call and starts a new window."""

    def __init__(self, bench: Bench, worker: psutil.Process) -> None:
        self._api = psutil.Process(bench.stack.processes["api"].pid)
        self._mongodb = bench.processes().get("mongodb")
        self._worker = worker
        self._peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> dict[str, float]:
        """Current RSS in MB: ``api``, ``mongodb`` and ``pool <pid>`` for each pool process."""
        found: dict[str, psutil.Process] = {"api": self._api}
        if self._mongodb is not None:
            found["mongodb"] = self._mongodb
        try:
            for child in self._worker.children():
                found[f"pool {child.pid}"] = child
        except psutil.NoSuchProcess:
            pass
        sizes = {}
        for name, process in found.items():
            try:
                sizes[name] = process.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
        return sizes

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the API and MongoDB, and of this process (the reader)."""
        found = {"api": self._api, "mongodb": self._mongodb, "client": psutil.Process()}
        return {k: sum(p.cpu_times()[:2]) for k, p in found.items() if p is not None}

    def window(self) -> dict[str, float]:
        sample = self.now()
        with self._lock:
            peaks, self._peaks = self._peaks, {}
        return {k: max(v, peaks.get(k, 0.0)) for k, v in {**peaks, **sample}.items()}

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            sample = self.now()
            with self._lock:
                for name, mb in sample.items():
                    self._peaks[name] = max(mb, self._peaks.get(name, 0.0))


def _pools(sizes: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in sizes.items() if k.startswith("pool ")}


def _read_status(bench: Bench, request_id: str) -> tuple[int, int, float]:
    """Every product through the status pages: (rows, pages, seconds). The seconds are those
    of the GETs, bytes received; each page is parsed after its clock stops (a 1,000-product
    page is ~1 MB of JSON: at 20k rows/s the client's parsing in Python would be what is
    measured, as for the CSV)."""
    rows = pages = offset = 0
    seconds = 0.0
    while True:
        started = time.perf_counter()
        response = bench.client.get(
            f"/api/status/{request_id}", params={"offset": offset, "limit": STATUS_PAGE_LIMIT}
        )
        seconds += time.perf_counter() - started
        response.raise_for_status()
        page = response.json()
        rows += len(page["products"])
        pages += 1
        offset += STATUS_PAGE_LIMIT
        if offset >= page["products_total"] or not page["products"]:
            return rows, pages, seconds


def _read_csv(bench: Bench, request_id: str) -> tuple[int, int, float]:
    """The result CSV, streamed: (data rows, bytes, seconds). Rows are counted as line ends
    (the bench's cells hold none), not parsed: at 100k rows/s the client's own CSV parsing in
    Python would be what is measured."""
    rows, size, seconds = _read_lines(bench, f"/api/download/{request_id}")
    return rows - 1, size, seconds  # the header


def _read_jsonl(bench: Bench, request_id: str) -> tuple[int, int, float]:
    """Every image record, streamed: (records, bytes, seconds); one record per line."""
    return _read_lines(bench, f"/api/requests/{request_id}/results")


def _read_lines(bench: Bench, path: str) -> tuple[int, int, float]:
    started = time.perf_counter()
    rows = size = 0
    with bench.client.stream("GET", path) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            rows += chunk.count(b"\n")  # CSV lines end "\r\n": one "\n" either way
            size += len(chunk)
    return rows, size, time.perf_counter() - started


def _wait_for_files(bench: Bench, request_id: str, timeout: float) -> float:
    """Seconds until the result CSV is served from its stored file (it has a length)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with bench.client.stream("GET", f"/api/download/{request_id}") as response:
            if "content-length" in response.headers:
                return time.perf_counter() - started
        time.sleep(0.2)
    raise TimeoutError(f"the result files of {request_id} not stored after {timeout:.0f}s")


def _batch(bench: Bench, sampler: _Sampler, images: int, photo: str, timeout: float) -> ScalePoint:
    body = batch_csv(bench.origin.base_url, images, [photo], f"scale{images}")
    sampler.window()  # a new window starts with this batch
    processes = bench.processes()
    cpu_before = cpu_seconds(processes)
    request_id = str(bench.upload(body, f"scale-{images}.csv")["request_id"])
    doc = bench.wait_done(request_id, timeout=timeout)
    cpu_batch = _roles(cpu_before, cpu_seconds(processes), images)
    during = sampler.window()
    if doc["status"] != "completed":
        raise RuntimeError(f"scale batch of {images} ended {doc['status']}: {doc}")
    end = sampler.now()
    seconds = float((doc["completed_at"] - doc["created_at"]).total_seconds())
    files_seconds = _wait_for_files(bench, request_id, timeout)
    cpu_before = sampler.cpu_seconds()
    status_rows, pages, status_s = _read_status(bench, request_id)
    cpu_between = sampler.cpu_seconds()
    csv_rows, csv_bytes, csv_s = _read_csv(bench, request_id)
    cpu_after = sampler.cpu_seconds()
    jsonl_rows, jsonl_bytes, jsonl_s = _read_jsonl(bench, request_id)
    cpu_jsonl = sampler.cpu_seconds()
    reads = sampler.window()
    if status_rows != images or csv_rows != images or jsonl_rows != images:
        raise RuntimeError(
            f"read {status_rows} status, {csv_rows} CSV and {jsonl_rows} JSON rows of {images}"
        )
    return ScalePoint(
        images=int(doc["images_total"]),
        products=int(doc["products_total"]),
        failed=int(doc["images_failed"]),
        seconds=seconds,
        images_per_s=int(doc["images_total"]) / seconds,
        dispatch_seconds=float((doc["dispatched_at"] - doc["created_at"]).total_seconds()),
        cpu_ms_per_image=cpu_batch,
        api_rss_peak_mb=during["api"],
        api_rss_end_mb=end["api"],
        pool_rss_peak_mb=_pools(during),
        pool_rss_end_mb=_pools(end),
        mongodb_rss_end_mb=end.get("mongodb", float("nan")),
        status_pages=pages,
        status_seconds=status_s,
        status_rows_per_s=status_rows / status_s,
        csv_rows=csv_rows,
        csv_mb=csv_bytes / 2**20,
        csv_seconds=csv_s,
        csv_rows_per_s=csv_rows / csv_s,
        status_cpu_us_per_row=_per_row(cpu_before, cpu_between, status_rows),
        csv_cpu_us_per_row=_per_row(cpu_between, cpu_after, csv_rows),
        files_seconds=files_seconds,
        jsonl_rows=jsonl_rows,
        jsonl_mb=jsonl_bytes / 2**20,
        jsonl_rows_per_s=jsonl_rows / jsonl_s,
        jsonl_cpu_us_per_row=_per_row(cpu_after, cpu_jsonl, jsonl_rows),
        api_rss_reads_peak_mb=reads["api"],
        mongodb_rss_reads_peak_mb=reads.get("mongodb", float("nan")),
    )


def _roles(before: dict[str, float], after: dict[str, float], images: int) -> dict[str, float]:
    ms: dict[str, float] = {}
    for name, seconds in after.items():
        role = "worker pool" if "-child-" in name else name
        ms[role] = ms.get(role, 0.0) + (seconds - before.get(name, 0.0)) * 1000 / images
    ms["all"] = sum(ms.values())
    return {k: round(v, 2) for k, v in ms.items()}


def _per_row(before: dict[str, float], after: dict[str, float], rows: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) * 1e6 / rows, 1) for k in after}


def run(
    bench: Bench,
    sizes: Sequence[int],
    photo: str,
    *,
    concurrency: int,
    image_concurrency: int = 8,
) -> ScaleResult:
    """The batches in ``sizes`` order on one worker, started once (after a warm-up batch)."""
    worker = bench.start_worker(
        "worker-scale",
        concurrency,
        {"IMGBATCH_PRODUCT_IMAGE_CONCURRENCY": str(image_concurrency)},
    )
    # Imports, connection pools and the first allocations happen here, not in the first size.
    warm = batch_csv(bench.origin.base_url, _WARMUP_IMAGES, [photo], "scale-warmup")
    bench.wait_done(str(bench.upload(warm)["request_id"]), timeout=120)
    path = bench.origin.root / photo
    with Image.open(path) as image:
        px = image.size
    with _Sampler(bench, worker) as sampler:
        baseline = sampler.now()
        result = ScaleResult(
            photo=photo,
            photo_px=px,
            photo_bytes=path.stat().st_size,
            concurrency=concurrency,
            image_concurrency=image_concurrency,
            baseline_api_rss_mb=baseline["api"],
            baseline_pool_rss_mb=_pools(baseline),
        )
        for images in sizes:
            print(f"  scale: {images:,} images ...", flush=True)
            # At 20 images/s, a rate no quiet run came near, before giving up.
            result.points.append(
                _batch(bench, sampler, images, photo, timeout=max(300.0, images / 20))
            )
    return result


def target_rows(results: dict[str, Any]) -> list[list[object]]:
    """Target 5's rows for the TARGETS table."""
    scale: ScaleResult | None = results.get("scale")
    if scale is None or not scale.points:
        return []
    label = "/".join(
        f"{p.images // 1000}k" if p.images >= 1000 else str(p.images) for p in scale.points
    )
    first, last = scale.points[0], scale.points[-1]
    status_min = min(p.status_rows_per_s for p in scale.points)

    rss_target = f"<= {RSS_FACTOR}x first + {RSS_SLACK_MB:.0f}"
    return [
        [
            f"5 scale {label}: images/s max ÷ min",
            scale.rate_spread,
            f"<= {RATE_SPREAD}",
            verdict(scale.rate_spread <= RATE_SPREAD),
        ],
        [
            f"  API RSS peak (batch and reads), {first.images:,} -> {last.images:,}, MB",
            f"{first.api_peak_mb:.0f} -> {last.api_peak_mb:.0f}",
            rss_target,
            verdict(scale.rss_flat("api_peak_mb")),
        ],
        [
            f"  worker pool RSS peak, {first.images:,} -> {last.images:,}, MB",
            f"{first.pool_peak_mb:.0f} -> {last.pool_peak_mb:.0f}",
            rss_target,
            verdict(scale.rss_flat("pool_peak_mb")),
        ],
        [
            "  status pages, rows/s (slowest size)",
            status_min,
            ">= 20k",
            verdict(status_min >= ROWS_PER_S),
        ],
        # Issue 23 sets the file rate at the largest request (50k): at 1k rows a download is
        # ~10 ms, and the request's fixed cost is what a rate over it would measure.
        [
            f"  result CSV (stored file), rows/s at {last.images:,}",
            last.csv_rows_per_s,
            ">= 100k",
            verdict(last.csv_rows_per_s >= FILE_ROWS_PER_S),
        ],
        [
            f"  JSON Lines (stored file), rows/s at {last.images:,}",
            last.jsonl_rows_per_s,
            ">= 100k",
            verdict(last.jsonl_rows_per_s >= FILE_ROWS_PER_S),
        ],
        [
            "  result files stored after completion, s (largest size)",
            last.files_seconds,
            "",
            "",
        ],
    ]


def table(results: dict[str, Any]) -> str:
    scale: ScaleResult | None = results.get("scale")
    if scale is None:
        return ""
    rows = [
        [
            p.images,
            p.failed,
            p.seconds,
            p.images_per_s,
            p.dispatch_seconds,
            p.cpu_ms_per_image.get("all"),
            p.cpu_ms_per_image.get("worker pool"),
            p.cpu_ms_per_image.get("mongodb"),
            p.api_rss_peak_mb,
            p.api_rss_end_mb,
            p.api_rss_reads_peak_mb,
            p.pool_peak_mb,
            p.pool_end_mb,
            p.mongodb_rss_end_mb,
            p.mongodb_rss_reads_peak_mb,
            p.status_rows_per_s,
            _cpu(p.status_cpu_us_per_row),
            p.csv_rows_per_s,
            _cpu(p.csv_cpu_us_per_row),
            p.jsonl_rows_per_s,
            _cpu(p.jsonl_cpu_us_per_row),
            p.files_seconds,
        ]
        for p in scale.points
    ]
    header = [
        "images",
        "failed",
        "s",
        "img/s",
        "dispatch s",
        "CPU ms/img",
        "pool",
        "mongodb",
        "API peak",
        "API end",
        "API reads",
        "pool peak",
        "pool end",
        "mongodb end",
        "mongodb reads",
        "status rows/s",
        "status µs/row api+db",
        "CSV rows/s",
        "CSV µs/row api+db",
        "JSONL rows/s",
        "JSONL µs/row api+db",
        "files s",
    ]
    w, h = scale.photo_px
    title = (
        f"SCALE CURVE ({w}x{h} px JPEG, {scale.photo_bytes / 1024:.0f} KB, 1 image per product, "
        f"origin latency 0; worker {scale.concurrency}x{scale.image_concurrency}, started once; "
        f"RSS MB sampled every {_SAMPLE_S}s, peak during the batch, at its end, peak during "
        f"the reads after it; pool = the largest pool process; baseline after "
        f"warm-up: API {scale.baseline_api_rss_mb:.0f}, pool "
        f"{max(scale.baseline_pool_rss_mb.values(), default=0):.0f})"
    )
    return render_table(title, header, rows)


def _cpu(per_row: dict[str, float]) -> str:
    return f"{per_row.get('api', 0):.0f}+{per_row.get('mongodb', 0):.0f}"


def parse_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--scale", type=parse_sizes, default=list(DEFAULT_SIZES), help="images")
    parser.add_argument("--concurrency", type=int, default=Settings().worker_concurrency)
    parser.add_argument("--image-concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    args = parser.parse_args(argv)
    chosen = list(QUICK_SIZES) if args.quick else args.scale
    from bench.report import write_json  # only this entry point writes a file

    with tempfile.TemporaryDirectory(prefix="imgbatch-scale-") as tmp:
        work = Path(tmp)
        photo = write_photo(work / "photos")
        with running(
            work / "stack", work / "photos", latency=0.0, jitter=0.0, bandwidth=None
        ) as bench:
            results: dict[str, Any] = {
                "scale": run(
                    bench,
                    chosen,
                    photo,
                    concurrency=args.concurrency,
                    image_concurrency=args.image_concurrency,
                )
            }
    print(
        render_table("TARGETS", ["metric", "measured", "target", "verdict"], target_rows(results))
    )
    print(table(results))
    print(f"\nJSON: {write_json(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
