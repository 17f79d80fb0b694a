"""What a product's move to its final state tells the operators: the image counters, its owner's
per-minute activity (``GET /api/stats``) and, once per request, the first image done (audit).

Called only by the run that won the product's transition, right where its request's counters
move, so the metrics equal what status reports, however many runs raced for the product.

Database writes are per run, not per product (they were two of the five writes a product cost,
bench/README.md): the activity of a run's products is added up in a :class:`Tally` and written
in one upsert just before the run's last count, so it is in before the request can complete;
the first-image audit entry is written once per request and process.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from imgbatch.core import metrics
from imgbatch.domain.audit import FIRST_IMAGE_MARKER, record_once
from imgbatch.domain.services import Services
from imgbatch.models.products import ImageError, ImageOutcome, ProductRecord

# Requests whose first image done this process has recorded (or found recorded): the marker
# write is conditional, so skipping it again is only a saved round trip.
_FIRST_RECORDED: OrderedDict[str, None] = OrderedDict()
_FIRST_RECORDED_KEPT = 1024


@dataclass
class Tally:
    """One owner's images done and failed (by code) over a run's products, not yet written."""

    owner: str
    done: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)

    async def flush(self, svc: Services) -> None:
        if not self.done and not self.failed:
            return
        done, failed, warnings = self.done, self.failed, self.warnings
        self.done, self.failed, self.warnings = 0, Counter(), Counter()
        await svc.activity.record(self.owner, done=done, failed=failed, warnings=warnings)


async def count_outcomes(
    svc: Services,
    tally: Tally,
    product: ProductRecord,
    results: list[ImageOutcome | ImageError],
) -> None:
    """Count a finished product's images: metrics at once, activity into ``tally``."""
    failed = Counter(r.code for r in results if isinstance(r, ImageError))
    reused = sum(
        1 for i, r in enumerate(results) if isinstance(r, ImageOutcome) and _reused(product, i, r)
    )
    done = len(results) - failed.total() - reused
    metrics.IMAGES.labels("done", "").inc(done)
    metrics.IMAGES.labels("reused", "").inc(reused)
    for code, count in failed.items():
        metrics.IMAGES.labels("failed", code).inc(count)
    tally.done += done + reused
    tally.failed.update(failed)
    tally.warnings.update(
        warning.code
        for result in results
        if isinstance(result, ImageOutcome)
        for warning in result.warnings
    )
    if done + reused and product.request_id not in _FIRST_RECORDED:
        await record_once(svc, product.request_id, "image.first_done", FIRST_IMAGE_MARKER)
        _FIRST_RECORDED[product.request_id] = None
        while len(_FIRST_RECORDED) > _FIRST_RECORDED_KEPT:
            _FIRST_RECORDED.popitem(last=False)


def _reused(product: ProductRecord, index: int, outcome: ImageOutcome) -> bool:
    """No work was done for this image: its record says so (``duplicate``, ``not_modified``),
    as status shows it, or it is the record of an earlier run (a retry redoes only what
    failed)."""
    return outcome.reused is not None or outcome == product.image(index)
