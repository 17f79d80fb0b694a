"""One input image, from its URL (or uploaded original) to stored outputs, doing no work twice.

1. **Unchanged source.** If this owner fetched the URL before and the outputs of those bytes
   under this profile still exist, the request is conditional (``If-None-Match`` /
   ``If-Modified-Since``); a ``304`` reuses the outputs without downloading the body
   (``reused: "not_modified"``). If those outputs are gone, the URL is fetched unconditionally.
2. **Same bytes.** The body's sha256 names a media object (``models.media``): if it is ready,
   its outputs are reused (``reused: "duplicate"``); if another image is rendering it, this one
   waits for that; otherwise this image claims it and renders. The claim is an insert, so of
   two images with the same bytes (in one chunk, or in two workers) exactly one renders.
3. **Render.** One decode, every variant (``imaging.render``), under the process's decode slot;
   the outputs go to content-addressed keys and the media object becomes ready, held by this
   request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Final

from core.errors import ImageErrorCode, ImageFailure
from core.logs import log_event, redact_url
from imaging import Profile, Rendition, open_image, render_profile
from imaging.metadata import ExifInfo
from imaging.profiles import OutputFormat, default_profile
from models.media import MediaRecord, MediaState, Rendered, SourceInfo, StoredVariant
from models.products import ImageError, ImageOutcome, ProductRecord
from models.requests import RequestRecord
from models.sources import SourceValidators
from storage import IMMUTABLE, media_prefix, variant_key
from worker.downloads import Validators, fetch
from worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

DUPLICATE: Final = "duplicate"
NOT_MODIFIED: Final = "not_modified"
_WAIT_FIRST, _WAIT_MAX = 0.02, 0.5


@dataclass(frozen=True)
class ImageJob:
    """What every image of one request shares."""

    request_id: str
    owner: str
    profile: Profile
    profile_digest: str
    # A single-image job's original in temporary storage: read instead of downloading.
    temp_key: str | None

    @classmethod
    def of(cls, rt: WorkerRuntime, request: RequestRecord) -> ImageJob:
        profile = request.profile or default_profile(rt.settings.jpeg_quality)
        return cls(
            request_id=request.id,
            owner=request.owner,
            profile=profile,
            profile_digest=profile.digest(jpeg_optimize=rt.settings.jpeg_optimize),
            temp_key=request.temp_key,
        )

    def media_id(self, sha256: str) -> str:
        return media_prefix(self.owner, sha256, self.profile_digest)


@dataclass(frozen=True)
class Known:
    """A URL this owner fetched before, whose outputs under this profile are ready."""

    validators: SourceValidators
    media: MediaRecord


async def known_sources(rt: WorkerRuntime, job: ImageJob, urls: list[str]) -> dict[str, Known]:
    """The URLs worth a conditional request, in two reads for a whole chunk of products."""
    if job.temp_key is not None or not urls:
        return {}
    validators = await rt.sources.get_many(job.owner, urls)
    ready = await rt.media.get_many(job.media_id(v.sha256) for v in validators.values())
    known = {}
    for url, fetched in validators.items():
        media = ready.get(job.media_id(fetched.sha256))
        if media is not None and media.state == MediaState.READY and media.rendered:
            known[url] = Known(fetched, media)
    return known


async def process_image(
    rt: WorkerRuntime,
    job: ImageJob,
    product: ProductRecord,
    index: int,
    url: str,
    known: Known | None,
) -> ImageOutcome | ImageError:
    """The image's outcome, or its error. Errors that are not the image's fault propagate."""
    marker = rt.settings.test_crash_marker
    if marker and marker in url:
        # Test-only: behave like an image that takes its worker process down with it.
        os.kill(os.getpid(), signal.SIGKILL)
    started = time.monotonic()
    slot = f"{product.request_id}:{product.serial_number}:{index}"
    try:
        reused = await _reuse_unchanged(rt, job, url, known) if known else None
        if isinstance(reused, ImageOutcome):
            outcome = reused
        else:
            data = reused if reused is not None else await _source_bytes(rt, job, url)
            outcome = await _render_or_reuse(rt, job, slot, data, product.attempts)
    except ImageFailure as failure:
        log_event(
            logger,
            "image.failed",
            request_id=product.request_id,
            serial=product.serial_number,
            url=redact_url(url),
            code=failure.code,
        )
        return ImageError(index=index, url=url, code=failure.code, message=failure.message)
    return outcome.model_copy(update={"processing_ms": _ms_since(started)})


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


async def _reuse_unchanged(
    rt: WorkerRuntime, job: ImageJob, url: str, known: Known
) -> ImageOutcome | bytes | None:
    """Revalidate a URL whose bytes we have outputs for.

    The reused outcome on ``304``; the new body if the source changed; None when the outputs
    went away, and the caller downloads as usual.
    """
    if not await _files_exist(rt, known.media):
        return None  # a wiped store: nothing to reuse, a plain download
    validators = Validators(
        etag=known.validators.etag, last_modified=known.validators.last_modified
    )
    fetched = await fetch(rt.http, url, rt.download_policy, conditional=validators)
    if not fetched.not_modified:
        assert fetched.data is not None
        # Changed at the origin: these are the new bytes; no second download.
        await _remember(rt, job, url, fetched.validators, fetched.data)
        return fetched.data
    assert known.media.rendered is not None
    # Not held yet: hold_reused holds a product's reused images in one write.
    return ImageOutcome(media_id=known.media.id, rendered=known.media.rendered, reused=NOT_MODIFIED)


async def hold_reused(
    rt: WorkerRuntime, job: ImageJob, results: list[ImageOutcome | ImageError]
) -> list[int]:
    """Hold the media of a product's ``not_modified`` images for this request, in one write.

    Returns the indices whose media went away since it was read (retention deleted it in the
    meantime): those images must be done again, with an unconditional download.
    """
    reused = {
        index: result.media_id
        for index, result in enumerate(results)
        if isinstance(result, ImageOutcome) and result.reused == NOT_MODIFIED
    }
    if not reused:
        return []
    held = await rt.media.hold_many(reused.values(), job.request_id)
    return [index for index, media_id in reused.items() if media_id not in held]


async def _source_bytes(rt: WorkerRuntime, job: ImageJob, url: str) -> bytes:
    if job.temp_key is not None:
        data = await rt.store.get(job.temp_key)
        if data is None:
            raise ImageFailure(
                ImageErrorCode.DOWNLOAD_FAILED,
                "the uploaded original is no longer kept (IMGBATCH_TEMP_TTL_HOURS); upload again",
            )
        return data
    fetched = await fetch(rt.http, url, rt.download_policy)
    assert fetched.data is not None
    await _remember(rt, job, url, fetched.validators, fetched.data)
    return fetched.data


async def _remember(
    rt: WorkerRuntime, job: ImageJob, url: str, validators: Validators, data: bytes
) -> None:
    if not validators:
        return  # nothing to revalidate with next time
    days = rt.settings.result_ttl_days
    await rt.sources.remember(
        job.owner,
        url,
        SourceValidators(
            etag=validators.etag, last_modified=validators.last_modified, sha256=_sha256(data)
        ),
        keep_for=timedelta(days=days) if days else None,
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _files_exist(rt: WorkerRuntime, record: MediaRecord) -> bool:
    if record.rendered is None:
        return False
    primary = next(iter(record.rendered.variants.values()))
    return await rt.store.exists(primary.key)


async def _render_or_reuse(
    rt: WorkerRuntime, job: ImageJob, slot: str, data: bytes, attempt: int
) -> ImageOutcome:
    sha256 = _sha256(data)
    media_id = job.media_id(sha256)
    wait = _WAIT_FIRST
    while True:
        record = await rt.media.get(media_id)
        token: str | None = None
        if record is None:
            token = await rt.media.claim(media_id, owner=job.owner, claimed_by=slot)
        elif record.state == MediaState.READY and await _files_exist(rt, record):
            if await rt.media.hold(media_id, job.request_id):
                assert record.rendered is not None
                # Our own render, found by a re-run of this image, is not a duplicate.
                reused = None if record.claimed_by == slot else DUPLICATE
                return ImageOutcome(media_id=media_id, rendered=record.rendered, reused=reused)
        elif (
            record.state == MediaState.READY
            or record.claimed_by == slot
            or (record.lease_expired())
        ):
            # Ready but its files are gone; or an earlier run of this very image claimed it
            # and died; or whoever claimed it has not finished within the lease.
            token = await rt.media.take_over(record, claimed_by=slot)
        if token is not None:
            outcome = await _render(rt, job, media_id, token, data, sha256, attempt)
            if outcome is not None:
                return outcome
            continue
        if record is not None and record.state in (MediaState.RENDERING, MediaState.DELETING):
            await asyncio.sleep(wait)  # another image renders these bytes (or deletes them)
            wait = min(wait * 2, _WAIT_MAX)


async def _render(
    rt: WorkerRuntime,
    job: ImageJob,
    media_id: str,
    token: str,
    data: bytes,
    sha256: str,
    attempt: int,
) -> ImageOutcome | None:
    """Render and publish under a claim; None if the claim was lost meanwhile."""
    try:
        async with rt.decode_slot:
            objects, rendered = await asyncio.to_thread(
                _render_sync,
                data,
                job.profile,
                media_id,
                sha256,
                max_pixels=rt.settings.max_image_pixels,
                jpeg_optimize=rt.settings.jpeg_optimize,
                report_gps=rt.settings.report_gps,
            )
        for key, (output, encoded) in objects.items():
            await rt.store.put(
                key, encoded, content_type=output.content_type, cache_control=IMMUTABLE
            )
        primary = next(iter(rendered.variants.values()))
        log_event(logger, "image.stored", key=primary.key, attempt=attempt, bytes=primary.bytes)
        if await rt.media.publish(media_id, token, rendered, job.request_id):
            return ImageOutcome(media_id=media_id, rendered=rendered)
        return None  # our lease ran out and another image took over: reuse its outputs
    except BaseException:
        await asyncio.shield(rt.media.abandon(media_id, token))
        raise


def _render_sync(
    data: bytes,
    profile: Profile,
    media_id: str,
    sha256: str,
    *,
    max_pixels: int,
    jpeg_optimize: bool,
    report_gps: bool,
) -> tuple[dict[str, tuple[OutputFormat, bytes]], Rendered]:
    """Decode once and render every variant (in a thread; Pillow releases the GIL)."""
    decoded = open_image(data, max_pixels=max_pixels)
    try:
        rendition: Rendition = render_profile(
            decoded, profile.variants, jpeg_optimize=jpeg_optimize
        )
        width, height = decoded.size
        source = SourceInfo(
            format=decoded.source_format.lower(),
            width=width,
            height=height,
            bytes=len(data),
            sha256=sha256,
        )
        exif = _exif_record(decoded.exif, report_gps=report_gps)
    finally:
        decoded.close()
    objects: dict[str, tuple[OutputFormat, bytes]] = {}
    variants: dict[str, StoredVariant] = {}
    for name, encoded in rendition.outputs.items():
        # Variants that came out identical share the object stored under the first one's name.
        key = variant_key(media_id, rendition.owner[name], encoded.format.extension)
        objects[key] = (encoded.format, encoded.data)
        variants[name] = StoredVariant(
            key=key,
            format=encoded.format.value,
            width=encoded.width,
            height=encoded.height,
            bytes=len(encoded.data),
        )
    return objects, Rendered(
        variants=variants,
        source=source,
        exif=exif,
        dominant_color=rendition.dominant_color,
        placeholder=rendition.placeholder,
        operations=list(rendition.operations),
    )


def _exif_record(exif: ExifInfo | None, *, report_gps: bool) -> dict[str, object] | None:
    if exif is None:
        return None
    record: dict[str, object] = asdict(exif)
    if not report_gps:
        # Coordinates are personal data: not even stored unless the operator asks for them.
        record.pop("latitude")
        record.pop("longitude")
    return record
