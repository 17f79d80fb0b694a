"""Request intake: every way work comes in (a sheet, one image) becomes a request here.

The endpoints parse the HTTP request and shape the answer; this service does the rest, once
for all of them: the webhook URL's check and its per-request secret, the expiry, the request
record, the first audit entry, the hand-off to the dispatcher and the ``request.accepted`` log
event. Called with an id already bound to the logs and holding the owner's in-flight slot
(``api.accepting``); whatever it raises, nothing of the request is visible.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from imgbatch.core.errors import ImageFailure, UnprocessableEntity
from imgbatch.core.logs import log_event, redact_url
from imgbatch.core.settings import Settings
from imgbatch.domain.audit import key_name, record
from imgbatch.domain.services import Services
from imgbatch.domain.staging import sheet_limits, stage_sheet
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.domain.webhook_targets import validate_webhook_url
from imgbatch.imaging.compress import inspect_image
from imgbatch.imaging.profiles import Profile
from imgbatch.models.products import ProductRecord
from imgbatch.models.requests import Priority, RequestKind, RequestRecord, RequestStatus, now
from imgbatch.sheets import NAME_COLUMN, SERIAL_COLUMN, URLS_COLUMN
from imgbatch.storage import temp_key

logger = logging.getLogger(__name__)

# The result CSV of a single-image job has the columns of a minimal sheet.
IMAGE_COLUMNS: list[tuple[str, str | None]] = [
    (SERIAL_COLUMN, SERIAL_COLUMN),
    (NAME_COLUMN, NAME_COLUMN),
    (URLS_COLUMN, URLS_COLUMN),
]
# The input "URL" of an uploaded image: the scheme says where it came from.
UPLOAD_SCHEME = "upload:"


@dataclass(frozen=True)
class Submission:
    """What the caller asked for, whatever the content: who, how, and where to report."""

    owner: str
    profile: Profile
    webhook_url: str | None = None
    # Per-image events webhook_url asked for besides the request's own (checked by
    # domain.image_events.requested_events); a single-image job gets image.failed regardless.
    webhook_events: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    # The caller's metadata, already checked by domain.metadata.parse_metadata.
    metadata: str | None = None


@dataclass(frozen=True)
class Accepted:
    request_id: str
    products: int
    images: int
    # Signs the deliveries to the request's webhook_url; the caller sees it once, in the answer.
    webhook_secret: str | None


@dataclass(frozen=True)
class _Opening:
    """What every new request starts with, settled before any content is stored."""

    created: datetime
    expires_at: datetime | None
    webhook_url: str | None
    webhook_secret: str | None


class IntakeService:
    """Stateless; one instance (:data:`intake`). Methods take the services first."""

    async def accept_sheet(
        self,
        svc: Services,
        request_id: str,
        submission: Submission,
        *,
        sheet: BinaryIO,
        file_name: str | None,
    ) -> Accepted:
        """Validate and stage the sheet, then write the request; nothing visible until the end."""
        # Checked before the sheet is read: a bad URL is refused without staging anything.
        opening = self._open(svc.settings, submission)
        staged = await stage_sheet(svc.chunks, request_id, sheet, sheet_limits(svc.settings))
        # The request document is written last: until it exists the upload is invisible, so a
        # crash mid-upload leaves only staged chunks behind, never a half-visible request.
        return await self._record(
            svc,
            request_id,
            submission,
            opening,
            columns=staged.columns,
            products_total=staged.products,
            images_total=staged.images,
            shopify_header=staged.shopify_header,
            file_name=(file_name or "")[:255] or None,
        )

    async def check_image(self, settings: Settings, data: bytes) -> None:
        """Refuse at the door what no worker could decode (magic bytes, header pixel count, a
        JPEG's scan count): a 422 before any job exists."""
        try:
            await asyncio.to_thread(
                inspect_image,
                data,
                max_pixels=settings.max_image_pixels,
                max_jpeg_scans=settings.max_jpeg_scans,
            )
        except ImageFailure as refused:
            raise UnprocessableEntity({"code": refused.code, "message": refused.message}) from None

    async def accept_image(
        self,
        svc: Services,
        request_id: str,
        submission: Submission,
        *,
        data: bytes,
        file_name: str | None,
    ) -> Accepted:
        """Keep the (already checked) original, then write its one product and the request."""
        opening = self._open(svc.settings, submission)
        name = display_name(file_name)
        # The original first, then the product, the request last: until the request exists
        # nothing is visible, and the sweeper finds a stray original through its index entry.
        original = temp_key(request_id)
        keep = timedelta(hours=svc.settings.temp_ttl_hours)
        await svc.temp_objects.add(original, request_id, not_before=opening.created + keep)
        await svc.store.put(original, data, content_type="application/octet-stream")
        await svc.products.insert_many(
            [
                ProductRecord(
                    request_id=request_id,
                    serial_number=1,
                    position=0,
                    line=1,
                    product_name=name,
                    input_image_urls=[f"{UPLOAD_SCHEME}{name}"],
                )
            ]
        )
        return await self._record(
            svc,
            request_id,
            submission,
            opening,
            log={"bytes": len(data)},
            columns=IMAGE_COLUMNS,
            products_total=1,
            images_total=1,
            ingested=True,
            kind=RequestKind.IMAGE,
            temp_key=original,
            file_name=name,
        )

    def _open(self, settings: Settings, submission: Submission) -> _Opening:
        webhook_url = submission.webhook_url
        if webhook_url:
            webhook_url = validate_webhook_url(webhook_url, settings, field="webhook_url")
        created = now()
        ttl = settings.result_ttl_days
        return _Opening(
            created=created,
            expires_at=created + timedelta(days=ttl) if ttl else None,
            webhook_url=webhook_url,
            # Its own secret per request, rather than one for the whole installation: a
            # receiver can verify its deliveries without being able to forge anyone else's.
            webhook_secret=new_secret() if webhook_url else None,
        )

    async def _record(
        self,
        svc: Services,
        request_id: str,
        submission: Submission,
        opening: _Opening,
        *,
        log: dict[str, Any] | None = None,
        **content: Any,
    ) -> Accepted:
        """Write the request (it becomes visible), audit it, dispatch it and log it.

        ``content`` is what the kind of upload adds to the record (columns, counts, ...)."""
        request = RequestRecord(
            id=request_id,
            owner=submission.owner,
            status=RequestStatus.PENDING,
            priority=submission.priority,
            webhook_url=opening.webhook_url,
            webhook_secret=opening.webhook_secret,
            webhook_events=list(submission.webhook_events),
            created_at=opening.created,
            updated_at=now(),
            expires_at=opening.expires_at,
            profile=submission.profile,
            metadata_json=submission.metadata,
            **content,
        )
        await svc.requests.create(request)
        await record(
            svc,
            request.id,
            "request.uploaded",
            key=await key_name(svc, submission.owner),
            products=request.products_total,
            images=request.images_total,
            priority=submission.priority,
            profile=submission.profile.name,
            webhook=bool(opening.webhook_url),
        )
        await _dispatch(svc, request.id)
        log_event(
            logger,
            "request.accepted",
            request_id=request.id,
            kind=request.kind,
            products=request.products_total,
            images=request.images_total,
            **(log or {}),
            profile=submission.profile.name,
            webhook=redact_url(opening.webhook_url) if opening.webhook_url else None,
        )
        return Accepted(
            request_id=request.id,
            products=request.products_total,
            images=request.images_total,
            webhook_secret=opening.webhook_secret,
        )


async def _dispatch(svc: Services, request_id: str) -> None:
    """Send the new request to the dispatcher; if the broker is down, the reconciler will."""
    try:
        await svc.tasks.dispatch(request_id)
    except Exception as exc:
        log_event(
            logger,
            "request.dispatch_deferred",
            logging.WARNING,
            request_id=request_id,
            error=type(exc).__name__,
        )


def display_name(filename: str | None) -> str:
    """An uploaded file's name without any directory part, or ``image``."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    printable = "".join(ch for ch in base if ch.isprintable())[:200]
    return printable or "image"


intake = IntakeService()
