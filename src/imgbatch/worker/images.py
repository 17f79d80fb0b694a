"""One input image, from its URL (or uploaded original) to stored outputs, doing no work twice.

1. **Unchanged source.** If this owner's URL gave bytes whose outputs under this profile exist
   (``models.media`` records which URLs gave each object's bytes, with their ``ETag`` and
   ``Last-Modified``), the request is conditional (``If-None-Match`` / ``If-Modified-Since``);
   a ``304`` reuses the outputs without downloading the body (``reused: "not_modified"``). If
   those outputs are gone, the URL is fetched unconditionally.
2. **Same bytes.** The body's sha256 names a media object: if it is ready, its outputs are
   reused (``reused: "duplicate"``). Images of one worker process with the same bytes render
   one at a time (a lock per object), so the second finds the first's outputs: two products
   of one chunk never render the same bytes twice.
3. **Render.** One decode, every variant (``imaging.render``), under the process's decode slot;
   the outputs go to content-addressed keys, then the media object is recorded ready, held by
   this request.

An image writes nothing to ``media`` itself: what it needs written (a new record, a hold on a
reused one) goes into its run's :class:`MediaWrites`, which the run writes for the products it
finishes together, in at most two round trips, before their final move (``worker.products``).
Lookups by sha256 of a process's images are gathered into one read (:class:`_Lookups`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Final, TypeVar

from imgbatch.core import metrics
from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.core.logs import log_event, redact_url
from imgbatch.imaging import Profile, Rendition, open_image, render_profile
from imgbatch.imaging.metadata import ExifInfo
from imgbatch.imaging.profiles import OutputFormat, default_profile
from imgbatch.imaging.quality import Checks, Measures, assess
from imgbatch.models.media import (
    MediaRecord,
    MediaRepository,
    MediaState,
    NewMedia,
    Rendered,
    SourceInfo,
    StoredVariant,
    source_key,
)
from imgbatch.models.media import Validators as StoredValidators
from imgbatch.models.products import ImageError, ImageOutcome, ImageWarning, ProductRecord
from imgbatch.models.requests import RequestRecord, now
from imgbatch.storage import IMMUTABLE, media_prefix, variant_key
from imgbatch.worker.budget import BudgetLease
from imgbatch.worker.downloads import Validators, fetch
from imgbatch.worker.heap import trim_after
from imgbatch.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

DUPLICATE: Final = "duplicate"
NOT_MODIFIED: Final = "not_modified"
_WAIT_FIRST, _WAIT_MAX = 0.05, 1.0

_Objects = dict[str, tuple[OutputFormat, bytes]]


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


@dataclass
class _Locks:
    """One lock per media object in this process, dropped when no one holds or waits for it."""

    locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)

    @asynccontextmanager
    async def hold(self, media_id: str) -> AsyncIterator[None]:
        lock, users = self.locks.get(media_id, (asyncio.Lock(), 0))
        self.locks[media_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.locks[media_id]
            if users == 1:
                del self.locks[media_id]
            else:
                self.locks[media_id] = (lock, users - 1)


# Per process (each task process runs one event loop): images of one chunk always share it.
_renders = _Locks()


# How long the first media lookup of a batch waits for others to join it. A chunk's images
# finish downloading within ~100 ms of each other (the origin's jitter) and then wait for the
# process's one decode slot for far longer than this, so the wait costs no throughput; it makes
# a read per image a read per few images (bench/notes/writes.md).
_LOOKUP_WINDOW: Final = 0.02


@dataclass
class _Lookups:
    """The media lookups of one process gathered for one read (a find on ``_id`` ``$in``).

    Hand-written rather than a data-loader library: the lock has none, and this is the whole of
    it (one batch open per event loop, read once the window is over). Each process runs one
    loop, whose images all read through one runtime's repository.
    """

    media: MediaRepository
    waiting: dict[str, list[asyncio.Future[MediaRecord | None]]] = field(default_factory=dict)


_open_lookups: dict[asyncio.AbstractEventLoop, _Lookups] = {}
_lookup_reads: set[asyncio.Task[None]] = set()  # referenced until done


async def _lookup(rt: WorkerRuntime, media_id: str) -> MediaRecord | None:
    loop = asyncio.get_running_loop()
    batch = _open_lookups.get(loop)
    if batch is None:
        batch = _open_lookups[loop] = _Lookups(rt.media)
        read = loop.create_task(_read_lookups(loop, batch))
        _lookup_reads.add(read)
        read.add_done_callback(_lookup_reads.discard)
    future: asyncio.Future[MediaRecord | None] = loop.create_future()
    batch.waiting.setdefault(media_id, []).append(future)
    return await future


async def _read_lookups(loop: asyncio.AbstractEventLoop, batch: _Lookups) -> None:
    try:
        await asyncio.sleep(_LOOKUP_WINDOW)
    finally:
        # Closed to newcomers from here on, read or not: a later lookup opens the next batch.
        del _open_lookups[loop]
    try:
        found = await batch.media.get_many(batch.waiting)
    except BaseException as exc:  # every waiter gets the error, as its own read would have
        for futures in batch.waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        if not isinstance(exc, Exception):
            raise  # cancelled: the task ends cancelled
        return
    for media_id, futures in batch.waiting.items():
        for future in futures:
            if not future.done():
                future.set_result(found.get(media_id))


@dataclass(frozen=True)
class Hold:
    """Hold a ready record found for an image (reused) for the request, adding the URL that
    gave the bytes, if any."""

    media_id: str
    source: tuple[str, StoredValidators] | None = None


@dataclass(frozen=True)
class Insert:
    """Record the run's own render of ``media_id`` (kept in :attr:`MediaWrites.unrecorded`)."""

    media_id: str


MediaWrite = Hold | Insert
_Key = TypeVar("_Key", bound=Hashable)


@dataclass
class MediaWrites:
    """The ``media`` writes a run's images leave for the run to make when their products finish
    (``worker.products``): one insert of the new records, one bulk write of the holds.

    Every image of a run is for one request, so a render this run has not recorded yet serves
    its other images with the same bytes as it is: the one insert holds it for all of them.
    """

    job: ImageJob
    unrecorded: dict[str, NewMedia] = field(default_factory=dict)
    # Recorded or held by this run for its request: nothing more to write for them.
    held: set[str] = field(default_factory=set)

    def rendered(self, record: NewMedia) -> None:
        self.unrecorded[record.media_id] = record
        self.held.discard(record.media_id)

    async def write(self, rt: WorkerRuntime, writes: Mapping[_Key, MediaWrite]) -> set[_Key]:
        """Make these images' writes, in at most two round trips; before their products' final
        move, so a finished product's outputs are always held for its request.

        Returns the images to do again: the record they reuse went away (retention deleted it)
        before this request held it.
        """
        wanted = {w.media_id for w in writes.values() if isinstance(w, Insert)}
        new = [self.unrecorded[media_id] for media_id in wanted if media_id in self.unrecorded]
        existing = await rt.media.create_many(new)
        holds: dict[str, list[tuple[str, StoredValidators]]] = {}
        for record in new:
            del self.unrecorded[record.media_id]
            if record.media_id in existing:
                # Another process recorded the same bytes first (same keys, same content).
                holds[record.media_id] = list(record.sources.items())
            else:
                self.held.add(record.media_id)
                _count_recorded(record.rendered)
        for write in writes.values():
            if isinstance(write, Hold) and (write.source or write.media_id not in self.held):
                sources = holds.setdefault(write.media_id, [])
                if write.source:
                    sources.append(write.source)
        if holds:
            self.held |= await rt.media.hold_many(holds, self.job.request_id, sources=holds)
        return {key for key, write in writes.items() if write.media_id not in self.held}


@dataclass(frozen=True)
class Known:
    """A URL this owner fetched before, whose outputs under this profile are ready."""

    key: str
    validators: StoredValidators
    media: MediaRecord


async def known_sources(rt: WorkerRuntime, job: ImageJob, urls: Sequence[str]) -> dict[str, Known]:
    """The URLs worth a conditional request, in one read for a whole chunk of products."""
    if job.temp_key is not None or not urls:
        return {}
    keys = {source_key(job.owner, url): url for url in urls}
    known: dict[str, Known] = {}
    for media in await rt.media.by_sources(keys):
        if media.id != job.media_id(media.rendered.source.sha256):
            continue  # the same bytes under another profile: those outputs do not serve here
        for key in set(media.source_keys) & set(keys):
            validators = media.validators.get(key)
            url = keys[key]
            # A URL that changed bytes may still be listed under the old ones: the newest wins.
            if validators and (url not in known or known[url].validators.at < validators.at):
                known[url] = Known(key, validators, media)
    return known


async def process_image(
    rt: WorkerRuntime,
    job: ImageJob,
    writes: MediaWrites,
    product: ProductRecord,
    index: int,
    url: str,
    known: Known | None,
) -> tuple[ImageOutcome | ImageError, MediaWrite | None]:
    """The image's outcome, or its error, and the ``media`` write it leaves to its run (see
    :class:`MediaWrites`). Errors that are not the image's fault propagate."""
    marker = rt.settings.test_crash_marker
    if marker and marker in url:
        # Test-only: behave like an image that takes its worker process down with it.
        os.kill(os.getpid(), signal.SIGKILL)
    started = time.monotonic()
    slot = f"{product.request_id}:{product.serial_number}:{index}"
    # The body counts against the process's download budget from before it is read until it
    # has been rendered, the span in which it waits for the one decode slot.
    lease = rt.download_budget.lease()
    try:
        outcome, write = await _outcome(rt, job, writes, slot, product.attempts, url, known, lease)
    except ImageFailure as failure:
        log_event(
            logger,
            "image.failed",
            request_id=product.request_id,
            serial=product.serial_number,
            url=redact_url(url),
            code=failure.code,
        )
        error = ImageError(
            index=index,
            url=url,
            code=failure.code,
            message=failure.message,
            attempts=failure.attempts,
        )
        return error, None
    finally:
        # The body went with _outcome's frame: its space can go back to the system.
        held = lease.held
        lease.release()
        trim_after(held)
    done = outcome.model_copy(
        update={
            "processing_ms": _ms_since(started),
            "warnings": image_warnings(job.profile.checks, outcome.rendered),
        }
    )
    return done, write


async def _outcome(
    rt: WorkerRuntime,
    job: ImageJob,
    writes: MediaWrites,
    slot: str,
    attempt: int,
    url: str,
    known: Known | None,
    lease: BudgetLease,
) -> tuple[ImageOutcome, MediaWrite]:
    """Revalidate, or download and render: the body lives in this frame only."""
    reused = await _reuse_unchanged(rt, job, url, known, lease) if known else None
    if isinstance(reused, ImageOutcome):
        return reused, Hold(reused.media_id)
    data, validators = reused or await _source(rt, job, url, lease)
    source = (source_key(job.owner, url), validators) if validators else None
    outcome, write = await _render_or_reuse(rt, job, writes, slot, data, source, attempt)
    if known is not None and outcome.media_id != known.media.id:
        # The URL gives other bytes now: stop revalidating it against the old ones.
        await rt.media.forget_source(known.media.id, known.key)
    return outcome, write


def image_warnings(checks: Checks, rendered: Rendered) -> list[ImageWarning]:
    """The image's catalogue-quality warnings under this request's thresholds (reused outputs
    carry their measures, so they are judged like new ones)."""
    measures = (
        None
        if rendered.sharpness is None or rendered.white_border is None
        else Measures(rendered.sharpness, rendered.white_border)
    )
    source = rendered.source
    return [
        ImageWarning(code=found.code, message=found.message)
        for found in assess(checks, source.width, source.height, measures)
    ]


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


_Source = tuple[bytes, StoredValidators | None]


async def _reuse_unchanged(
    rt: WorkerRuntime, job: ImageJob, url: str, known: Known, lease: BudgetLease
) -> ImageOutcome | _Source | None:
    """Revalidate a URL whose bytes we have outputs for.

    The reused outcome on ``304`` (not held yet: its run holds it, with the others it finishes
    together, in one write); the new body if the source changed; None when the outputs went away,
    and the caller downloads as usual.
    """
    if not await _files_exist(rt, known.media):
        return None  # a wiped store: nothing to reuse, a plain download
    validators = Validators(
        etag=known.validators.etag, last_modified=known.validators.last_modified
    )
    fetched = await fetch(rt.http, url, rt.download_policy, lease=lease, conditional=validators)
    if fetched.data is not None:
        return fetched.data, _stored(fetched.validators)  # changed: the new bytes, no 2nd GET
    return ImageOutcome(media_id=known.media.id, rendered=known.media.rendered, reused=NOT_MODIFIED)


def _stored(validators: Validators) -> StoredValidators | None:
    if not validators:
        return None  # nothing to revalidate with next time
    return StoredValidators(etag=validators.etag, last_modified=validators.last_modified, at=now())


async def _source(rt: WorkerRuntime, job: ImageJob, url: str, lease: BudgetLease) -> _Source:
    if job.temp_key is not None:
        data = await rt.store.get(job.temp_key)
        if data is None:
            raise ImageFailure(
                ImageErrorCode.DOWNLOAD_FAILED,
                "the uploaded original is no longer kept (IMGBATCH_TEMP_TTL_HOURS); upload again",
            )
        return data, None
    fetched = await fetch(rt.http, url, rt.download_policy, lease=lease)
    assert fetched.data is not None
    return fetched.data, _stored(fetched.validators)


async def _files_exist(rt: WorkerRuntime, record: MediaRecord) -> bool:
    primary = next(iter(record.rendered.variants.values()))
    return await rt.store.exists(primary.key)


async def _render_or_reuse(
    rt: WorkerRuntime,
    job: ImageJob,
    writes: MediaWrites,
    slot: str,
    data: bytes,
    source: tuple[str, StoredValidators] | None,
    attempt: int,
) -> tuple[ImageOutcome, MediaWrite]:
    # In a thread: ~1-2 ms for a 1 MB body that the event loop would otherwise spend not
    # serving downloads and database replies (hashlib releases the GIL for large inputs).
    sha256 = await asyncio.to_thread(_sha256, data)
    media_id = job.media_id(sha256)
    rendered: tuple[_Objects, Rendered] | None = None
    wait = _WAIT_FIRST
    # Images of this process with these bytes go one at a time: the first renders, the others
    # find its outputs when their turn comes.
    async with _renders.hold(media_id):
        while True:
            mine = writes.unrecorded.get(media_id)
            if mine is not None:
                # Rendered by this run, to be recorded with its product: this image's product
                # goes in the same write or a later one, which holds it for this request too.
                if source is not None:
                    mine.sources.setdefault(*source)
                reused = None if mine.made_by == slot else DUPLICATE
                return ImageOutcome(
                    media_id=media_id, rendered=mine.rendered, reused=reused
                ), Insert(media_id)
            record = await _lookup(rt, media_id)
            if record is not None and record.state == MediaState.READY:
                if not await _files_exist(rt, record):
                    # Recorded but its files are gone (a wiped store): put them back.
                    rendered = rendered or await _render(rt, job, media_id, data, sha256)
                    await _store(rt, rendered[0], attempt)
                    _count_stored(rendered[0])
                # Our own render (a repair, or found again by a re-run of this image) is no
                # duplicate. If the record goes before the run holds it, the image is redone.
                reused = None if rendered or record.made_by == slot else DUPLICATE
                return ImageOutcome(
                    media_id=media_id, rendered=record.rendered, reused=reused
                ), Hold(media_id, source)
            if record is not None and not record.deletion_abandoned():
                # Being deleted (its last request expired): its files go, then the record.
                await asyncio.sleep(wait)
                wait = min(wait * 2, _WAIT_MAX)
                continue
            if record is not None and record.token is not None:
                await rt.media.forget(media_id, record.token)  # a deleter died half-way
            rendered = rendered or await _render(rt, job, media_id, data, sha256)
            objects, record_of_render = rendered
            await _store(rt, objects, attempt)
            writes.rendered(
                NewMedia(
                    media_id,
                    owner=job.owner,
                    rendered=record_of_render,
                    holder=job.request_id,
                    made_by=slot,
                    sources=dict([source]) if source else {},
                )
            )
            # Counted once recorded (MediaWrites.write): if another process recorded the same
            # bytes first, its objects are the ones stored, and these are not counted again.
            return ImageOutcome(media_id=media_id, rendered=record_of_render), Insert(media_id)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _render(
    rt: WorkerRuntime, job: ImageJob, media_id: str, data: bytes, sha256: str
) -> tuple[_Objects, Rendered]:
    async with rt.decode_slot:
        return await asyncio.to_thread(
            _render_sync,
            data,
            job.profile,
            media_id,
            sha256,
            max_pixels=rt.settings.max_image_pixels,
            max_jpeg_scans=rt.settings.max_jpeg_scans,
            decode_seconds=rt.settings.decode_cpu_seconds,
            jpeg_optimize=rt.settings.jpeg_optimize,
            report_gps=rt.settings.report_gps,
        )


async def _store(rt: WorkerRuntime, objects: _Objects, attempt: int) -> None:
    with metrics.IMAGE_PHASE_SECONDS.labels("store").time():
        for key, (output, encoded) in objects.items():
            await rt.store.put(
                key, encoded, content_type=output.content_type, cache_control=IMMUTABLE
            )
    primary = next(iter(objects))
    log_event(logger, "image.stored", key=primary, attempt=attempt, bytes=len(objects[primary][1]))


def _count_stored(objects: _Objects) -> None:
    """Output bytes by format, per object set stored."""
    for output, encoded in objects.values():
        metrics.OUTPUT_BYTES.labels(output.value).inc(len(encoded))


def _count_recorded(rendered: Rendered) -> None:
    """Output bytes by format of a render recorded as the object of its bytes (each stored
    object once: variants that share one name its key once)."""
    for variant in {v.key: v for v in rendered.variants.values()}.values():
        metrics.OUTPUT_BYTES.labels(variant.format).inc(variant.bytes)


def _render_sync(
    data: bytes,
    profile: Profile,
    media_id: str,
    sha256: str,
    *,
    max_pixels: int,
    max_jpeg_scans: int,
    decode_seconds: float,
    jpeg_optimize: bool,
    report_gps: bool,
) -> tuple[_Objects, Rendered]:
    """Decode once and render every variant (in a thread; Pillow releases the GIL).

    The decode caps (pixels, JPEG scans, CPU seconds: ``imaging.limits``) apply here, for every
    image, sheet or single-image job alike. The CPU deadline is this thread's, so the reader is
    made in the thread that decodes.
    """
    decoded = open_image(
        data, max_pixels=max_pixels, max_jpeg_scans=max_jpeg_scans, decode_seconds=decode_seconds
    )
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
    objects: _Objects = {}
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
        sharpness=rendition.measures.sharpness,
        white_border=rendition.measures.white_border,
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
