"""``make bench``: see bench/README.md for the method and what the numbers settle.

Phases, each on fresh processes and all stopped in ``finally`` blocks:
codec limits -> profile costs (storefront vs default) -> 100k-row upload (API only) -> 16 MP
worker memory -> concurrency sweep -> decoupled-design prototype -> download clients side by
side -> the main batch with status load and an urgent small request -> default and storefront
batches of the same sheet -> re-import of an unchanged sheet -> 200 event-stream subscribers on
one request -> the scale curve (small images, 1k/10k/50k, a fast origin).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import (
    clients,
    codecs,
    decoupled,
    events,
    memory,
    profiles,
    reimport,
    scale,
    status,
    summary,
    throughput,
    upload,
)
from bench.data import BIG_PHOTO, DEFAULT_PHOTOS, copy_photos, images_per_product, load_photos
from bench.harness import running
from bench.report import RESULTS, write_json
from imgbatch.core.settings import Settings


def _configs(text: str) -> list[tuple[int, int]]:
    pairs = [part.split("x") for part in text.split(",") if part]
    return [(int(a), int(b)) for a, b in pairs]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--products", type=int, default=2000, help="main batch products (x3)")
    parser.add_argument("--upload-rows", type=int, default=100_000)
    parser.add_argument("--sweep-products", type=int, default=150)
    parser.add_argument(
        "--sweep",
        default="2x1,2x8,4x8,8x8",
        help="worker processes x PRODUCT_IMAGE_CONCURRENCY settings to compare",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Settings().worker_concurrency,
        help="main batch worker processes (default: what `make run` uses, the CPU count)",
    )
    parser.add_argument("--image-concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.150, help="origin latency, s")
    parser.add_argument("--jitter", type=float, default=0.050, help="origin latency jitter, s")
    parser.add_argument("--bandwidth", type=int, default=None, help="origin bytes/s/connection")
    parser.add_argument("--status-rate", type=float, default=200.0)
    parser.add_argument("--status-duration", type=float, default=15.0)
    parser.add_argument("--probe-at", type=float, default=0.2, help="batch fraction done")
    parser.add_argument("--codec-seconds", type=float, default=3.0)
    parser.add_argument("--profile-rounds", type=int, default=9, help="storefront vs default")
    parser.add_argument(
        "--reimport-products", type=int, default=200, help="re-imported sheet (x3 images)"
    )
    parser.add_argument("--budget", type=float, default=540.0, help="scale the batch to fit, s")
    parser.add_argument("--subscribers", type=int, default=200, help="event-stream clients")
    parser.add_argument("--events-products", type=int, default=150, help="their batch (x1)")
    parser.add_argument(
        "--scale",
        type=scale.parse_sizes,
        default=list(scale.DEFAULT_SIZES),
        help="scale curve batch sizes, images (1 per product)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy even if present")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.products, args.upload_rows, args.sweep_products = 150, 10_000, 40
        args.codec_seconds, args.status_duration, args.sweep = 1.0, 5.0, "2x8,4x8"
        args.profile_rounds, args.reimport_products = 3, 50
        args.events_products = 60
        args.scale = list(scale.QUICK_SIZES)
    args.cores = cores
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    photos = list(DEFAULT_PHOTOS)
    results: dict[str, Any] = {"args": vars(args), "notes": []}

    print(f"codec limits on {args.cores} cores, {args.codec_seconds:.0f}s each ...", flush=True)
    results["limits"] = codecs.limits(load_photos(photos), args.codec_seconds)
    results["per_image"] = codecs.per_image([*photos, BIG_PHOTO], args.codec_seconds / 6)
    results["codec_peak_mb_16mp"] = codecs.peak_memory(BIG_PHOTO)
    print(f"profile costs, {args.profile_rounds} interleaved rounds ...", flush=True)
    results["profiles"] = profiles.measure(photos, [BIG_PHOTO], args.profile_rounds)
    results["fidelity"] = profiles.fidelity(photos)

    with tempfile.TemporaryDirectory(prefix="imgbatch-bench-") as tmp:
        work = Path(tmp)
        root = copy_photos([*photos, BIG_PHOTO], work / "photos")
        origin = {"latency": args.latency, "jitter": args.jitter, "bandwidth": args.bandwidth}

        print(f"accepting a {args.upload_rows:,}-row CSV ...", flush=True)
        # The default address policy: its host check is part of what a user's upload costs.
        with running(work / "upload", root, beat=False, private_networks=False, **origin) as bench:
            results["upload"] = upload.accept(bench, args.upload_rows)

        with running(work / "stack", root, **origin) as bench:
            print("worker memory on the 16 MP photo ...", flush=True)
            results["memory"] = memory.worker_peak(bench, args.concurrency, [8, 1], 4, 3)

            print(f"sweep {args.sweep} on {args.sweep_products} products ...", flush=True)
            results["sweep"] = throughput.sweep(
                bench, _configs(args.sweep), args.sweep_products, photos, timeout=300
            )
            print("decoupled download/encode prototype ...", flush=True)
            results["decoupled"] = decoupled.run(bench.origin.base_url, photos, args.sweep_products)
            print("download clients side by side ...", flush=True)
            results["clients"] = clients.compare(bench.origin.base_url, photos)

            products = _fit(args, results, time.monotonic() - started)
            print(
                f"main batch: {products} products x {images_per_product(photos)} images ...",
                flush=True,
            )
            bench.start_worker(
                "worker-main",
                args.concurrency,
                {"IMGBATCH_PRODUCT_IMAGE_CONCURRENCY": str(args.image_concurrency)},
            )
            results["main"] = throughput.run_batch(
                bench,
                "main",
                products,
                photos,
                concurrency=args.concurrency,
                image_concurrency=args.image_concurrency,
                timeout=max(120.0, args.budget),
                load=throughput.LoadSpec(args.status_rate, args.status_duration),
                probe_at=args.probe_at,
                profile_dir=None if args.no_profile else RESULTS / "profiles",
            )
            results["status_idle"] = status.serial_latency(bench, results["main"].request_id)

            def sweep_sheet(label: str, name: str = "default", unique: bool = True) -> Any:
                """The sweep's sheet on the main batch's worker: by profile, or repeated."""
                return throughput.run_batch(
                    bench,
                    label,
                    args.sweep_products,
                    photos,
                    concurrency=args.concurrency,
                    image_concurrency=args.image_concurrency,
                    timeout=300,
                    profile_name=name,
                    unique=unique,
                )

            print(f"default vs storefront, {args.sweep_products} products each ...", flush=True)
            results["by_profile"] = [
                sweep_sheet(f"profile-{name}", name) for name in ("default", "storefront")
            ]
            print(f"repeated bytes: {args.sweep_products} products ...", flush=True)
            results["repeated"] = sweep_sheet("repeated", unique=False)
            print(f"re-import: {args.reimport_products} products, twice ...", flush=True)
            results["reimport"] = reimport.run(
                bench, args.reimport_products, photos, timeout=max(120.0, args.budget)
            )
            print(f"{args.subscribers} event-stream subscribers on one request ...", flush=True)
            with _phase(results, "events"):
                results["events"] = events.run(
                    bench, products=args.events_products, subscribers=args.subscribers
                )

        print(f"scale curve: {args.scale} small images, fast origin ...", flush=True)
        photo = scale.write_photo(root)
        with (
            _phase(results, "scale"),
            running(work / "scale", root, latency=0.0, jitter=0.0, bandwidth=None) as bench,
        ):
            results["scale"] = scale.run(
                bench,
                args.scale,
                photo,
                concurrency=args.concurrency,
                image_concurrency=args.image_concurrency,
            )
    results["total_seconds"] = time.monotonic() - started
    print(summary.render(results))
    print(f"\nJSON: {write_json(results)}")
    return 0


@contextmanager
def _phase(results: dict[str, Any], name: str) -> Iterator[None]:
    """A late phase that fails is a NOTE in the table, not the loss of every earlier phase's
    numbers (a run is 20 minutes)."""
    try:
        yield
    except Exception as exc:
        note = f"{name} phase failed: {type(exc).__name__}: {exc}"
        results["notes"].append(note)
        print(note, flush=True)


def _fit(args: argparse.Namespace, results: dict[str, Any], spent: float) -> int:
    """Scale the main batch down if, at the rate the sweep measured, it would not fit."""
    setting = (args.concurrency, args.image_concurrency)
    rates = [
        r.images_per_s for r in results["sweep"] if (r.concurrency, r.image_concurrency) == setting
    ]
    # Unswept setting: assume the slowest one measured, so the budget still holds.
    rate = min(rates) if rates else min(r.images_per_s for r in results["sweep"])
    per_product = images_per_product(DEFAULT_PHOTOS)
    # Half the sweep's rate: the status load runs during this batch and the API works off its
    # backlog for minutes after it (measured: 11.6 images/s against the sweep's 21.7).
    affordable = int(max(30.0, args.budget - spent - 20.0) * rate * 0.5 / per_product)
    if affordable >= args.products:
        return int(args.products)
    note = (
        f"main batch scaled down from {args.products} to {affordable} products to fit the "
        f"{args.budget:.0f}s budget (sweep rate {rate:.1f} images/s)"
    )
    results["notes"].append(note)
    print(note, flush=True)
    return affordable


if __name__ == "__main__":
    sys.exit(main())
