"""The cap on a key's unfinished requests (``MAX_REQUESTS_IN_FLIGHT``), held as slots.

An upload takes a slot before it stages anything and keeps it in its request; the request
gives it back when it completes, fails or is cancelled, and a retry takes one again. Taking
is one insert that only one caller can win (models.slots), so concurrent uploads cannot all
pass the cap, in one API process or many. A slot whose request finished without giving it back
(its process died in between), or never came to exist, is returned by the reconciler.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from imgbatch.core.errors import ImgbatchError
from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.models.requests import UNFINISHED_REQUEST, now
from imgbatch.models.slots import Take

logger = logging.getLogger(__name__)

REQUEST_SLOT = "request"


class TooManyInFlight(ImgbatchError):
    status_code = 429
    description = "The API key has as many unfinished requests as it may have"

    def __init__(self, cap: int) -> None:
        super().__init__(
            f"{cap} requests are still in progress for this key (limit {cap}); "
            "retry when some complete",
            headers={"Retry-After": "30"},
        )


async def reserve(svc: Services, owner: str, request_id: str) -> str | None:
    """Take one of ``owner``'s slots for ``request_id``; 429 if they are all taken. Returns
    the slot taken, for :func:`give_back` if what it was for fails; None if the request held
    one already (a concurrent retry of it took it), which is then not this caller's."""
    cap = svc.settings.max_requests_in_flight
    taken = await svc.slots.take(REQUEST_SLOT, owner, request_id, cap=cap)
    if taken.outcome == Take.FULL:
        raise TooManyInFlight(cap)
    return taken.slot_id


async def give_back(svc: Services, slot_id: str | None) -> None:
    """Return a slot :func:`reserve` took, when what it was taken for did not happen."""
    if slot_id is not None:
        await svc.slots.give_back(slot_id)


async def release(svc: Services, request_id: str) -> None:
    """The request has finished: its slot is free."""
    await svc.slots.release(request_id)


async def repair(svc: Services) -> int:
    """Return the slots no unfinished request holds; returns how many were returned."""
    slots = await svc.slots.of_kind(REQUEST_SLOT)
    if not slots:
        return 0
    statuses = await svc.requests.statuses([slot.holder for slot in slots])
    # An upload creates its request last; until then its slot has no request, for at most as
    # long as staged rows are kept for it.
    started_before = now() - timedelta(seconds=svc.settings.staging_ttl_seconds)
    returned = 0
    for slot in slots:
        status = statuses.get(slot.holder)
        if status in UNFINISHED_REQUEST or (status is None and slot.taken_at >= started_before):
            continue
        await svc.slots.release(slot.holder)
        log_event(logger, "inflight.slot_returned", request_id=slot.holder, owner=slot.owner)
        returned += 1
    return returned
