"""Write a large product sheet: ``python sample_csvs/generate_large.py [ROWS] [OUT] [BASE_URL]``.

Defaults: 100,000 rows of 3 URLs each into ``sample_csvs/large_products.csv``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

PHOTOS = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg", "hubble_deep_field.jpg"]


def write_sheet(path: Path, rows: int, base_url: str, images_per_row: int = 3) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
        for serial in range(1, rows + 1):
            urls = [
                f"{base_url}/{PHOTOS[(serial + i) % len(PHOTOS)]}?sku={serial}&i={i}"
                for i in range(images_per_row)
            ]
            writer.writerow([serial, f"SKU-{serial:06d}", ",".join(urls)])


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("large_products.csv")
    base = sys.argv[3] if len(sys.argv) > 3 else "https://images.example.com"
    write_sheet(out, count, base)
