"""Recounting: a request's counters rebuilt from its products, the source of truth."""

from __future__ import annotations

from domain.events import progress_moved
from domain.services import Services


async def recount(svc: Services, request_id: str) -> dict[str, int]:
    """Overwrite the request's counters with what its products say; returns the tally."""
    tally = await svc.products.tally(request_id)
    await svc.requests.set_counters(
        request_id,
        products_done=tally["products_done"],
        images_done=tally["images_done"],
        images_failed=tally["images_failed"],
    )
    await progress_moved(svc.events, request_id)
    return tally
