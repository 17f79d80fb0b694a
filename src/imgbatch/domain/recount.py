"""Recounting: the counts that a dead (or stalled) run never got onto its request, added once.

A worker counts the products it finishes together in two writes: their moves to a final state
(each carrying the run's token and its own ``seq``), then one update of the request's counters
for all of them. A run that dies between them leaves final products missing from the counters.
The reconciler completes such counts, one product at a time in ``seq`` order; it never
overwrites the counters, because a run that is merely slow may be about to make its own count.
Both are keyed, idempotent writes (``RequestRepository.count_products``: only if the run's key
is below the first ``seq`` counted), so whichever lands first, the other adds nothing.
"""

from __future__ import annotations

from imgbatch.domain.events import progress_moved
from imgbatch.domain.services import Services


async def recount(svc: Services, request_id: str) -> int:
    """Complete the request's interrupted counts; returns how many were still missing."""
    added = 0
    # In each run's count order: a run's key admits only counts after the last it recorded.
    for product in await svc.products.unsettled_counts(request_id):
        # Taken over first, so that its run, if alive, keeps its key until this is done.
        if not await svc.products.take_over_count(product):
            continue
        assert product.count_token is not None
        if await svc.requests.count_product(
            request_id,
            token=product.count_token,
            seq=product.count_seq,
            images_done=product.images_done,
            images_failed=product.images_failed,
        ):
            added += 1
        await svc.products.settle_count(request_id, product.serial_number)
    if added:
        await progress_moved(svc.events, request_id)
    return added
