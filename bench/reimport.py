"""Re-importing an unchanged sheet: the first import renders, the second revalidates.

The same sheet (``products`` x the photo mix, every URL with bytes of its own) is uploaded
twice by one owner. The first import downloads and renders every image; the second sends
``If-None-Match`` for each URL, gets ``304`` and reuses the outputs. Times are the request
documents' ``created_at -> completed_at`` (server clocks), as for the other batches; MongoDB's
own ``top`` counters, read around each import, give its round trips per image (``dbops``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import dbops
from bench.data import batch_csv
from bench.dbops import DbOps
from bench.harness import Bench


@dataclass(frozen=True)
class Reimport:
    images: int
    first_seconds: float
    second_seconds: float
    not_modified: int  # 304s the origin sent during the second import
    reused: dict[str, int]  # the second import's images by their "reused" value
    first_db: DbOps | None = None
    second_db: DbOps | None = None

    @property
    def speedup(self) -> float:
        return self.first_seconds / self.second_seconds


def _seconds(doc: dict[str, Any]) -> float:
    return float((doc["completed_at"] - doc["created_at"]).total_seconds())


def run(
    bench: Bench, products: int, photos: Sequence[str], timeout: float, tag: str = "reimport"
) -> Reimport:
    """``tag`` names the sheet's URLs: another tag is another sheet (new bytes to render)."""
    body = batch_csv(bench.origin.base_url, products, photos, tag)
    mongodb_url, database = bench.stack.mongodb_url, bench.stack.settings.mongodb_database
    assert mongodb_url
    at_start = dbops.snapshot(mongodb_url, database)
    first = bench.wait_done(str(bench.upload(body)["request_id"]), timeout=timeout)
    between = dbops.snapshot(mongodb_url, database)
    before = bench.origin.not_modified.count()
    second = bench.wait_done(str(bench.upload(body)["request_id"]), timeout=timeout)
    at_end = dbops.snapshot(mongodb_url, database)
    reused: dict[str, int] = {}
    for product in bench.products(second["_id"]):
        for image in product.get("images") or []:
            label = str(image["reused"]) if image else "failed"
            reused[label] = reused.get(label, 0) + 1
    images = int(first["images_total"])
    return Reimport(
        images=images,
        first_seconds=_seconds(first),
        second_seconds=_seconds(second),
        not_modified=bench.origin.not_modified.count() - before,
        reused=reused,
        first_db=dbops.delta(at_start, between, images),
        second_db=dbops.delta(between, at_end, images),
    )
