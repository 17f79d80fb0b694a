"""What a product's move to its final state tells the operators: the image counters, its owner's
per-minute activity (``GET /api/stats``) and, once per request, the first image done (audit).

Called only by the run that won the product's transition, right where its request's counters
move, so the metrics equal what status reports, however many runs raced for the product.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from core import metrics
from domain.audit import FIRST_IMAGE_MARKER, record_once
from domain.services import Services
from models.activity import ActivityRepository
from models.products import ImageError, ProductRecord

# A request's owner never changes: remembered per process instead of read per product.
_OWNERS: OrderedDict[str, str] = OrderedDict()
_OWNERS_KEPT = 1024


async def count_outcomes(
    svc: Services, product: ProductRecord, results: list[str | ImageError]
) -> None:
    failed = Counter(r.code for r in results if isinstance(r, ImageError))
    # An output that existed before this run (a retry redoes only what failed) is reused work.
    reused = sum(
        1 for i, r in enumerate(results) if isinstance(r, str) and product.output_key(i) == r
    )
    done = len(results) - failed.total() - reused
    metrics.IMAGES.labels("done", "").inc(done)
    metrics.IMAGES.labels("reused", "").inc(reused)
    for code, count in failed.items():
        metrics.IMAGES.labels("failed", code).inc(count)
    owner = await _owner(svc, product.request_id)
    if owner is None:
        return
    await ActivityRepository(svc.db).record(owner, done=done + reused, failed=failed)
    if done + reused:
        await record_once(svc, product.request_id, "image.first_done", FIRST_IMAGE_MARKER)


async def _owner(svc: Services, request_id: str) -> str | None:
    owner = _OWNERS.get(request_id)
    if owner is None:
        request = await svc.requests.get(request_id)
        if request is None:
            return None
        owner = _OWNERS[request_id] = request.owner
        while len(_OWNERS) > _OWNERS_KEPT:
            _OWNERS.popitem(last=False)
    return owner
