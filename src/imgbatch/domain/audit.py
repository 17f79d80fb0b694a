"""Recording a request's audit trail, from the API, the workers and the webhook tasks alike.

An entry is written beside the fact it records (the upload, a dispatch, a completion, a repair),
after that fact is settled. Losing an entry is better than redoing the work it describes, so a
database error while recording is logged and swallowed: it never changes an outcome.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import PyMongoError

from imgbatch.core.logs import log_event
from imgbatch.domain.services import Services
from imgbatch.models.audit import AuditEntry
from imgbatch.models.requests import now

logger = logging.getLogger(__name__)

# Marker field on the request: set by the first product that finishes with an image done.
FIRST_IMAGE_MARKER = "first_image_done_at"


async def record(svc: Services, request_id: str, event: str, **detail: Any) -> None:
    """Append ``event`` with ``detail`` to the request's trail."""
    await _append(svc, request_id, AuditEntry(at=now(), event=event, detail=detail), None)


async def record_once(
    svc: Services, request_id: str, event: str, marker: str, **detail: Any
) -> None:
    """Append ``event`` only if no earlier call set ``marker`` on the request."""
    await _append(svc, request_id, AuditEntry(at=now(), event=event, detail=detail), marker)


async def _append(svc: Services, request_id: str, entry: AuditEntry, marker: str | None) -> None:
    try:
        await svc.audit.append(request_id, entry, once=marker)
    except PyMongoError as exc:
        log_event(
            logger,
            "audit.not_recorded",
            logging.WARNING,
            request_id=request_id,
            audit_event=entry.event,
            error=type(exc).__name__,
        )


async def key_name(svc: Services, owner: str) -> str:
    """The name of the API key that owns a request (the owner is the key's id)."""
    key = await svc.api_keys.get(owner)
    return key.name if key is not None else owner
