"""The catalogue-quality checks' cost per image (target: at most 0.5 ms).

    .venv/bin/python -m bench.catalog_checks [--rounds 2000]

Times :func:`imgbatch.imaging.quality.measure` plus :func:`assess` on the summary image of each
photo of the corpus (what ``render_profile`` runs once per image), and prints the median and
the 95th percentile per photo in milliseconds. The summary image itself is not counted: the
dominant colour and the BlurHash already pay for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from imgbatch.imaging.metadata import summary_image
from imgbatch.imaging.quality import Checks, assess, measure

CORPUS = Path(__file__).parents[1] / "tests" / "fixtures" / "corpus"
PHOTOS = ("astronaut_16mp.jpg", "coffee_4mp.jpg", "chelsea.jpg", "rocket.jpg", "logo_alpha.png")


def per_image_ms(name: str, rounds: int) -> tuple[float, float]:
    with Image.open(CORPUS / name) as opened:
        small = summary_image(opened.convert("RGB"))
    checks = Checks(min_white_border=0.9)  # every check on
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        assess(checks, 4000, 3000, measure(small))
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.95)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args(argv)
    worst = 0.0
    for name in PHOTOS:
        median, p95 = per_image_ms(name, args.rounds)
        worst = max(worst, median)
        sys.stdout.write(f"{name:24} median {median:.3f} ms  p95 {p95:.3f} ms\n")
    sys.stdout.write(f"worst median {worst:.3f} ms (target <= 0.5 ms)\n")
    return 0 if worst <= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
