"""What the endpoints that create a request share: ``Idempotency-Key`` (same key and same
input, same response; the same key with other input is a 422; a second call while the first
runs, a 409), the upload's audit entry and handing the new request to the dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from api.schemas import UploadAccepted
from core.errors import Conflict, UnprocessableEntity
from core.logs import log_event
from core.settings import Settings
from domain.audit import key_name, record
from domain.services import Services
from domain.taskqueue import TaskSender
from domain.urls import download_url, status_url
from models.idempotency import IdempotencyRepository
from models.requests import RequestStatus

logger = logging.getLogger(__name__)


async def audit_upload(svc: Services, request_id: str, owner: str, **detail: Any) -> None:
    """The first entry of a request's audit trail: who uploaded it (the key's name), and what."""
    await record(svc, request_id, "request.uploaded", key=await key_name(svc, owner), **detail)


async def dispatch_new(tasks: TaskSender, request_id: str) -> None:
    """Send the new request to the dispatcher; if the broker is down, the reconciler will."""
    try:
        await tasks.dispatch(request_id)
    except Exception as exc:
        log_event(
            logger,
            "request.dispatch_deferred",
            logging.WARNING,
            request_id=request_id,
            error=type(exc).__name__,
        )


async def once(
    keys: IdempotencyRepository,
    owner: str,
    key: str | None,
    fingerprint: Callable[[], Awaitable[str]],
    accept: Callable[[], Awaitable[UploadAccepted]],
) -> UploadAccepted:
    if key is None:
        return await accept()
    digest = await fingerprint()
    existing = await keys.reserve(owner, key, digest)
    if existing is not None:
        if existing.fingerprint != digest:
            raise UnprocessableEntity("this Idempotency-Key was already used with a different file")
        if existing.response is None:
            raise Conflict("an upload with this Idempotency-Key is still being processed")
        return UploadAccepted.model_validate(existing.response)
    try:
        accepted = await accept()
    except BaseException:
        await keys.release(owner, key)
        raise
    await keys.complete(owner, key, accepted.model_dump())
    return accepted


def accepted(
    settings: Settings, request_id: str, *, products: int, images: int, webhook_secret: str | None
) -> UploadAccepted:
    return UploadAccepted(
        request_id=request_id,
        status=RequestStatus.PENDING,
        status_url=status_url(settings, request_id),
        download_url=download_url(settings, request_id),
        products=products,
        images=images,
        webhook_secret=webhook_secret,
    )
