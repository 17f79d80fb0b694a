"""What the endpoints that create a request share (``/api/upload`` and ``/api/images``).

- ``Idempotency-Key``: the same key with the same form (every field, files by content) gives
  the same response; the same key with another form is a 422; a second call while the first
  runs, a 409. A reservation holds a lease: if the upload that took it died before answering,
  a retry after the lease takes over instead of getting 409 for a day.
- Limits: a replay is answered before anything counts (it creates nothing), so it uses up
  neither the rate limit nor a request in flight. A new request takes one of its owner's
  in-flight slots before anything is read or stored, and gives it back if it fails.
- The 202 answer, shaped from what ``domain.intake`` accepted.
- The form fields and the header both endpoints take (:func:`intake_form`), so a field added
  to one is added to both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, BinaryIO

from fastapi import Depends, Form, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from imgbatch.api.auth import OwnerDep
from imgbatch.api.deps import (
    AppState,
    IdempotencyDep,
    ProfilesDep,
    ServicesDep,
    StateDep,
    choose_profile,
)
from imgbatch.api.ratelimits import limit_uploads
from imgbatch.api.schemas import UploadAccepted
from imgbatch.core.errors import Conflict, UnprocessableEntity
from imgbatch.core.logs import bind_context
from imgbatch.core.settings import Settings
from imgbatch.domain import inflight
from imgbatch.domain.intake import Accepted, Submission
from imgbatch.domain.metadata import parse_metadata
from imgbatch.domain.services import Services
from imgbatch.domain.urls import download_url, status_url
from imgbatch.models.idempotency import IdempotencyRepository
from imgbatch.models.requests import RequestStatus, now

logger = logging.getLogger(__name__)

# Makes a request under a new id (domain.intake); the id is bound to the logs and holds the
# in-flight slot.
Accept = Callable[[str], Awaitable[Accepted]]


@dataclass(frozen=True)
class IntakeForm:
    """One call of an endpoint that creates a request: who asks, what the shared form fields
    ask for, and what :meth:`once` needs to answer it at most once."""

    request: Request
    state: AppState
    services: Services
    keys: IdempotencyRepository
    submission: Submission
    idempotency_key: str | None

    async def once(self, accept: Accept, *, namespace: str = "") -> UploadAccepted:
        """``accept`` under the caller's ``Idempotency-Key`` (prefixed by ``namespace``)."""
        key = f"{namespace}{self.idempotency_key}" if self.idempotency_key else None
        return await once(
            self.request,
            self.state,
            self.services,
            self.keys,
            self.submission.owner,
            key,
            accept,
        )


async def intake_form(
    request: Request,
    owner: OwnerDep,
    state: StateDep,
    services: ServicesDep,
    keys: IdempotencyDep,
    profiles: ProfilesDep,
    webhook_url: Annotated[str | None, Form()] = None,
    profile: Annotated[str | None, Form(max_length=64)] = None,
    metadata: Annotated[str | None, Form()] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> IntakeForm:
    submission = Submission(
        owner=owner,
        profile=choose_profile(profiles, profile),
        webhook_url=webhook_url,
        metadata=parse_metadata(metadata),
    )
    return IntakeForm(request, state, services, keys, submission, idempotency_key)


IntakeFormDep = Annotated[IntakeForm, Depends(intake_form)]


async def once(
    request: Request,
    state: AppState,
    svc: Services,
    keys: IdempotencyRepository,
    owner: str,
    key: str | None,
    accept: Accept,
) -> UploadAccepted:
    """Create a request with ``accept``, at most once per ``key``, within the owner's limits."""
    if key is None:
        await limit_uploads(request, owner, state)
        return await _create(svc, owner, accept)
    fingerprint = await form_fingerprint(request)
    replayed = await _replay(keys, owner, key, fingerprint)
    if replayed is not None:
        await limit_uploads(request, owner, state, consume=False)
        return replayed
    await limit_uploads(request, owner, state)
    lease = timedelta(seconds=svc.settings.idempotency_lease_seconds)
    token = await keys.reserve(owner, key, fingerprint, lease=lease)
    if token is None:  # another upload with this key got there since we looked
        replayed = await _replay(keys, owner, key, fingerprint)
        if replayed is None:
            raise Conflict("an upload with this Idempotency-Key is still being processed")
        return replayed
    try:
        accepted = await _create(svc, owner, accept)
    except BaseException:
        await keys.release(owner, key, token)
        raise
    await keys.complete(owner, key, token, accepted.model_dump())
    return accepted


async def _create(svc: Services, owner: str, accept: Accept) -> UploadAccepted:
    request_id = uuid.uuid4().hex
    bind_context(request_id=request_id)
    # The request's place among its owner's requests in flight, taken before anything is read
    # or stored; it goes with the request, or is given back if the upload fails.
    slot = await inflight.reserve(svc, owner, request_id)
    try:
        return _answer(svc.settings, await accept(request_id))
    except BaseException:
        await inflight.give_back(svc, slot)
        raise


async def _replay(
    keys: IdempotencyRepository, owner: str, key: str, fingerprint: str
) -> UploadAccepted | None:
    """The stored answer for this key; None if the key is free (or its upload died)."""
    existing = await keys.get(owner, key)
    if existing is None:
        return None
    if existing.response is None and (existing.lease_until is None or existing.lease_until < now()):
        return None  # reserved by an upload that died before answering: ours to take over
    if existing.fingerprint != fingerprint:
        raise UnprocessableEntity(
            "this Idempotency-Key was already used for a different upload "
            "(another file or other form fields)"
        )
    if existing.response is None:
        raise Conflict("an upload with this Idempotency-Key is still being processed")
    return UploadAccepted.model_validate(existing.response)


async def form_fingerprint(request: Request) -> str:
    """What makes two uploads the same: every form field as sent, the file by its content.

    Taken from the parsed form rather than from named parameters, so a field added later is
    covered without anyone remembering to add it here. The path is part of it: a sheet and a
    single image are never the same upload.
    """
    form = await request.form()  # parsed once already, for the route's parameters
    return await run_in_threadpool(_digest, request.url.path, list(form.multi_items()))


def _digest(path: str, items: list[tuple[str, str | StarletteUpload]]) -> str:
    fields: list[list[str]] = [["path", "text", path]]
    for name, value in sorted(items, key=lambda item: item[0]):
        if isinstance(value, str):
            fields.append([name, "text", value])
            continue
        fields.append([name, "file", _file_digest(value.file)])
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _file_digest(stream: BinaryIO) -> str:
    stream.seek(0)  # the route may have read it already
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def _answer(settings: Settings, new: Accepted) -> UploadAccepted:
    return UploadAccepted(
        request_id=new.request_id,
        status=RequestStatus.PENDING,
        status_url=status_url(settings, new.request_id),
        download_url=download_url(settings, new.request_id),
        products=new.products,
        images=new.images,
        webhook_secret=new.webhook_secret,
    )
