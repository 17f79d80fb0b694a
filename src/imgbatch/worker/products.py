"""Processing products: their images (``worker.images``), many at once, then one transition.

A run of a chunk task holds a lease on each product it claimed and renews it while it works
(one bulk write per run every third of a lease, however many images it holds); the lease names
the process holding it (``worker.leases``). Only a product whose run is over may be taken over:
its lease ran out, or its holder is seen dead on this host. Only that counts as an attempt.

A run writes the products it finishes together (a flush, :func:`_flush`): their images'
``media`` records and holds (``worker.images.MediaWrites``), then their final moves in one bulk
write, each carrying the run's count key (token, seq), then one count on the request for all of
them. A flush goes once every product the run holds is waiting for it, or ``FLUSH_WINDOW``
after the first one that waits. A crash between the moves and the count leaves final products
whose count the reconciler completes one by one under the same keys (``domain.recount``), so
whichever write lands first, each image is counted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from pymongo.errors import PyMongoError

from imgbatch.core.errors import ImageErrorCode
from imgbatch.core.logs import log_event
from imgbatch.domain.completion import complete_when_counted
from imgbatch.domain.events import product_finished
from imgbatch.domain.image_events import announce_failed_images
from imgbatch.domain.removal import release_media
from imgbatch.models.products import (
    Finished,
    ImageError,
    ImageOutcome,
    ProductRecord,
    ProductStatus,
)
from imgbatch.models.requests import RequestRecord, RequestStatus
from imgbatch.worker import leases
from imgbatch.worker.images import (
    ImageJob,
    Known,
    MediaWrite,
    MediaWrites,
    known_sources,
    process_image,
)
from imgbatch.worker.outcomes import Tally, count_outcomes
from imgbatch.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

# How long a finished product waits for the run's other products to be written with it. A
# chunk's products finish within a second or two of each other on a busy worker, so this
# gathers several into one flush (four round trips whatever their number), while a slow
# sibling (a big photo, a download being retried) holds back the others' progress, events and
# webhooks by no more than this. The run's last product is written at once.
FLUSH_WINDOW: Final = 0.5


@dataclass(frozen=True)
class _Flushed:
    """What a flush did with a product: its final status (None: another run finished it first,
    or its request is gone), or the images to do again before it can finish."""

    status: ProductStatus | None = None
    redo: list[int] = field(default_factory=list)


@dataclass
class _Finishing:
    """A product done with its images, waiting for the run's next flush."""

    product: ProductRecord
    results: list[ImageOutcome | ImageError]
    writes: dict[int, MediaWrite]
    flushed: asyncio.Future[_Flushed]

    def finished(self) -> Finished:
        images = [r if isinstance(r, ImageOutcome) else None for r in self.results]
        return Finished(
            self.product.serial_number,
            output_keys=[_primary_key(image) if image else None for image in images],
            errors=[r for r in self.results if isinstance(r, ImageError)],
            images=images,
        )


@dataclass
class _Run:
    """One run of a chunk task: its token (its claims and the key its counts are made under),
    what it holds and what it counted."""

    request: RequestRecord
    lease: timedelta
    # Its products' activity, written once, before the run's last count (worker/outcomes.py).
    tally: Tally
    # What its images leave to write to `media` with their products.
    media: MediaWrites
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Claimed and not finished yet: what the run keeps leased.
    held: set[int] = field(default_factory=set)
    seq: int = 0
    counted: list[int] = field(default_factory=list)
    # Finished products waiting for the next flush, the flush due after FLUSH_WINDOW, and
    # every flush task (referenced until done).
    pending: list[_Finishing] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None
    flushes: set[asyncio.Task[None]] = field(default_factory=set)
    # A run's counts reach the request in order (see RequestRepository.count_products), so
    # flushes happen one at a time, under this lock.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set when the run ends, whatever it was doing: its lease renewals stop.
    over: bool = False
    # A flush that failed may or may not have counted: the run writes nothing more, and leaves
    # what it finished to the reconciler (a later count would hide the missing one's key).
    broken: BaseException | None = None


async def process_products(rt: WorkerRuntime, request_id: str, serial_numbers: list[int]) -> None:
    """Process a chunk of one request's products, all at once.

    A prefork process would otherwise sit idle while one product's few images download; with
    a chunk in flight it decodes one image while the others' downloads proceed.
    """
    request = await rt.requests.get(request_id)
    if request is None or request.status != RequestStatus.IN_PROGRESS:
        return
    job = ImageJob.of(rt, request)
    lease = timedelta(seconds=rt.settings.product_lease_seconds)
    run = _Run(request, lease, Tally(request.owner), MediaWrites(job))
    renewing = asyncio.create_task(_keep_leases(rt, run))
    try:
        with leases.running(run.token):
            await _run_chunk(rt, run, job, serial_numbers)
    finally:
        run.over = True  # the renewals stop even if their cancellation is lost (_keep_leases)
        for task in [*run.flushes, renewing]:  # a flush left is a timer with nothing to write
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # What a product that raised left in the tally (the others' went in before the last count).
    await run.tally.flush(rt)
    # Only after a clean run: one that raised (a database outage, say) may not know whether
    # its last count landed, so it leaves its counts and key for the reconciler to settle.
    await _settle_counts(rt, run)
    await complete_when_counted(rt, request_id)


async def _run_chunk(
    rt: WorkerRuntime, run: _Run, job: ImageJob, serial_numbers: list[int]
) -> None:
    # Every pending product of the chunk at once: this message is the only one that names
    # them, so once claimed, a death of this run is seen on them (their holder is gone) and the
    # reconciler sends them again at once; left pending, they would wait for the message's
    # redelivery (the broker's visibility timeout).
    claimed = await rt.products.claim_many(
        run.request.id,
        serial_numbers,
        token=run.token,
        lease=run.lease,
        holder=leases.this_process(),
    )
    run.held.update(p.serial_number for p in claimed)
    # What this owner's URLs answered last time, for conditional requests: for the chunk.
    known = await known_sources(rt, job, [url for p in claimed for url in _todo(p)])
    outcomes = await asyncio.gather(
        *(_process_product(rt, run, job, product, known) for product in claimed),
        return_exceptions=True,
    )
    # Every product ran to its end before we raise: nothing is left half-done.
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    got = {p.serial_number for p in claimed}
    rest = [serial for serial in serial_numbers if serial not in got]
    # The rest are final, or an earlier run holds them (it died, or is still at work): last,
    # so that one which killed its run cannot take the others down with it.
    if rest and await rt.products.any_processing(run.request.id, rest):
        await _take_over(rt, run, job, rest)


async def _keep_leases(rt: WorkerRuntime, run: _Run) -> None:
    """Renew the leases of what the run holds, every third of a lease, until the run is over.

    Not only until cancelled: PyMongo's socket writes go through ``asyncio.wait_for``, which
    on Python 3.11 loses a cancellation that arrives as the write completes (gh-86296), and a
    renewal loop that outlived its run kept the run's products leased, by a live holder, for
    ever. Seen in the fault tests after a MongoDB restart: the run awaited this task in its
    ``finally`` while the task slept between renewals (worker.stacks showed both).
    """
    while True:
        await asyncio.sleep(run.lease.total_seconds() / 3)
        if run.over:
            return
        try:
            await rt.products.renew_leases(run.request.id, sorted(run.held), lease=run.lease)
        except PyMongoError as exc:
            # The next renewal may get through before the lease runs out; the work goes on.
            log_event(
                logger, "product.lease_renewal_failed", logging.WARNING, error=type(exc).__name__
            )


async def _take_over(
    rt: WorkerRuntime, run: _Run, job: ImageJob, serial_numbers: list[int]
) -> None:
    """Products of the chunk that an earlier run holds: it died holding them, or is still at
    work on them.

    Go one product at a time, so that a product which kills its worker takes only itself down,
    and only it is ever failed. A product a run holds is taken only once that run's lease has
    run out: a live run renews it, and is left to finish it.
    """
    held_elsewhere = []
    for serial_number in serial_numbers:
        product = await _claim(rt, run, serial_number)
        if product is not None:
            await _process_alone(rt, run, job, product)
        elif await _held_by_a_run(rt, run.request.id, serial_number):
            held_elsewhere.append(serial_number)
    # Watched together, so a dead run's products are free at once; then claimed one
    # at a time, each just before it runs: claiming them all at once would count an attempt
    # on every one of them if the first took this run down too.
    abandoned = await asyncio.gather(
        *(_wait_until_abandoned(rt, run, serial) for serial in held_elsewhere)
    )
    for serial_number, free in zip(held_elsewhere, abandoned, strict=True):
        product = await _claim(rt, run, serial_number) if free else None
        if product is not None:  # None: another run got it first
            await _process_alone(rt, run, job, product)


async def _claim(rt: WorkerRuntime, run: _Run, serial_number: int) -> ProductRecord | None:
    product = await rt.products.claim(
        run.request.id,
        serial_number,
        token=run.token,
        lease=run.lease,
        holder=leases.this_process(),
    )
    if product is not None:
        run.held.add(serial_number)
    return product


async def _held_by_a_run(rt: WorkerRuntime, request_id: str, serial_number: int) -> bool:
    product = await rt.products.get(request_id, serial_number)
    return product is not None and product.status == ProductStatus.PROCESSING


async def _wait_until_abandoned(rt: WorkerRuntime, run: _Run, serial_number: int) -> bool:
    """Whether the run holding a product is over (its holder died, or let its lease run out);
    False once that run turns out to be alive (it renewed the lease) or the product moved on."""
    # The holder renews at least every third of a lease; looking once a second as well notices
    # a product finished by it (or its holder's death) without waiting that long.
    poll = min(run.lease.total_seconds() / 3, 1.0)
    seen: datetime | None = None
    while True:
        product = await rt.products.get(run.request.id, serial_number)
        if product is None or product.status != ProductStatus.PROCESSING:
            return False
        if leases.abandoned(product):
            if product.claim is not None:
                # A dead holder's lease may not have run out yet: end it, so the claim takes it.
                await rt.products.release(run.request.id, serial_number, product.claim)
            return True
        if seen is not None and product.lease_until != seen:
            return False  # its holder renewed it: not ours to take
        seen = product.lease_until
        assert seen is not None  # abandoned() is true for a lease without an end
        await asyncio.sleep(min(poll, (seen - datetime.now(UTC)).total_seconds() + 0.05))


async def _settle_counts(rt: WorkerRuntime, run: _Run) -> None:
    if not run.counted:
        return  # it counted nothing, so it has no key on the request
    settled = await rt.products.mark_counted(run.request.id, run.counted)
    # If the reconciler took some of these over meanwhile, it still needs the run's key to
    # recognise a count that already landed; the key is one small entry, so it stays.
    if settled == len(run.counted):
        await rt.requests.forget_count_run(run.request.id, run.token)


async def _process_alone(
    rt: WorkerRuntime, run: _Run, job: ImageJob, product: ProductRecord
) -> None:
    known = await known_sources(rt, job, _todo(product))
    await _process_product(rt, run, job, product, known)


async def _process_product(
    rt: WorkerRuntime, run: _Run, job: ImageJob, product: ProductRecord, known: dict[str, Known]
) -> None:
    try:
        await _run_product(rt, run, job, product, known)
    finally:
        run.held.discard(product.serial_number)
        # One that raised no longer holds back the others' flush.
        _schedule_flush(rt, run)


async def _run_product(
    rt: WorkerRuntime, run: _Run, job: ImageJob, product: ProductRecord, known: dict[str, Known]
) -> None:
    if product.attempts > rt.settings.max_attempts:
        # This product has taken its worker down every time it ran: stop feeding it to workers.
        failed = _all_failed(
            product,
            ImageErrorCode.WORKER_CRASH,
            f"gave up after {product.attempts - 1} attempts",
            attempts=product.attempts - 1,
        )
        flushed = await _commit(rt, run, product, failed, {})
        await _announce(rt, run, product, failed, flushed.status)
        return
    semaphore = asyncio.Semaphore(rt.settings.product_image_concurrency)
    writes: dict[int, MediaWrite] = {}

    async def bounded(index: int, url: str, known: Known | None) -> ImageOutcome | ImageError:
        earlier = product.image(index)
        if earlier is not None and _done(product, index):
            return earlier  # done by an earlier run; a retry redoes only what failed
        async with semaphore:
            result, write = await process_image(rt, job, run.media, product, index, url, known)
        if write is not None:
            writes[index] = write
        else:
            writes.pop(index, None)
        return result

    urls = product.input_image_urls
    results = list(
        await asyncio.gather(*(bounded(i, url, known.get(url)) for i, url in enumerate(urls)))
    )
    while (flushed := await _commit(rt, run, product, results, writes)).redo:
        # Reused media that went away before the run held them (retention deleted them in
        # the meantime): those images are done again, with an unconditional download.
        for index in flushed.redo:
            results[index] = await bounded(index, urls[index], None)
    await _announce(rt, run, product, results, flushed.status)


def _done(product: ProductRecord, index: int) -> bool:
    return product.output_key(index) is not None and product.image(index) is not None


def _todo(product: ProductRecord) -> list[str]:
    return [url for i, url in enumerate(product.input_image_urls) if not _done(product, i)]


def _all_failed(
    product: ProductRecord, code: ImageErrorCode, message: str, *, attempts: int
) -> list[ImageOutcome | ImageError]:
    return [
        ImageError(index=i, url=url, code=code, message=message, attempts=attempts)
        for i, url in enumerate(product.input_image_urls)
    ]


async def _commit(
    rt: WorkerRuntime,
    run: _Run,
    product: ProductRecord,
    results: list[ImageOutcome | ImageError],
    writes: dict[int, MediaWrite],
) -> _Flushed:
    """Hand a finished product to the run's next flush and wait for it."""
    flushed: asyncio.Future[_Flushed] = asyncio.get_running_loop().create_future()
    run.pending.append(_Finishing(product, list(results), dict(writes), flushed))
    _schedule_flush(rt, run)
    return await flushed


def _schedule_flush(rt: WorkerRuntime, run: _Run) -> None:
    if not run.pending:
        return
    if run.held <= {entry.product.serial_number for entry in run.pending}:
        _start_flush(rt, run, 0.0)  # nothing the run holds is still at work: no reason to wait
    elif run.timer is None:
        run.timer = _start_flush(rt, run, FLUSH_WINDOW)


def _start_flush(rt: WorkerRuntime, run: _Run, delay: float) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(_flush_after(rt, run, delay))
    run.flushes.add(task)
    task.add_done_callback(run.flushes.discard)
    return task


async def _flush_after(rt: WorkerRuntime, run: _Run, delay: float) -> None:
    if delay:
        await asyncio.sleep(delay)
        if run.timer is asyncio.current_task():
            run.timer = None  # from here on, nobody cancels it: it is writing
    await _flush(rt, run)


async def _flush(rt: WorkerRuntime, run: _Run) -> None:
    """Write every product waiting, and tell each one how it went."""
    async with run.lock:
        if run.timer is not None and run.timer is not asyncio.current_task():
            run.timer.cancel()  # this flush takes what it was waiting for
        run.timer = None
        batch, run.pending = run.pending, []
        if not batch:
            return
        try:
            if run.broken is not None:
                raise run.broken
            outcomes = await _write(rt, run, batch)
        except BaseException as exc:
            run.broken = run.broken or exc
            for entry in batch:
                if not entry.flushed.done():
                    entry.flushed.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for entry, outcome in zip(batch, outcomes, strict=True):
            if not entry.flushed.done():
                entry.flushed.set_result(outcome)


async def _write(rt: WorkerRuntime, run: _Run, batch: list[_Finishing]) -> list[_Flushed]:
    """A flush's writes, in the order that keeps every product's outputs held and every image
    counted once: media records and holds; the products' final moves, each under the run's
    next seq; then one count of the moved ones on the request."""
    request_id = run.request.id
    redo: dict[int, list[int]] = {}
    writes = {(i, index): w for i, entry in enumerate(batch) for index, w in entry.writes.items()}
    for i, index in sorted(await run.media.write(rt, writes)):
        redo.setdefault(i, []).append(index)
    finishing = [(i, entry) for i, entry in enumerate(batch) if i not in redo]
    finished = [entry.finished() for _, entry in finishing]
    first_seq = run.seq + 1
    run.seq += len(finished)
    moved = await rt.products.finish_many(request_id, finished, run.token, first_seq)
    _test_crash_at_count(rt, [entry.product for _, entry in finishing])
    for _, entry in finishing:
        # Final either way: no longer the run's to renew.
        run.held.discard(entry.product.serial_number)
    if len(moved) < len(finished) and await rt.requests.get(request_id) is None:
        # Another run of these products got there first and counted them, or the request was
        # deleted while this run rendered: then what it stored is held for a request that is
        # gone, and released here (domain.deletion).
        await release_media(rt, request_id)
        moved = {}
    counts: dict[int, tuple[int, int]] = {}  # seq -> (images done, images failed)
    for seq, (_, entry), outcome in zip(
        range(first_seq, run.seq + 1), finishing, finished, strict=True
    ):
        if entry.product.serial_number in moved:
            errors = len(outcome.errors)
            counts[seq] = (len(outcome.output_keys) - errors, errors)
            await count_outcomes(rt, run.tally, entry.product, entry.results)
    if not run.held:
        # The run's last products: the activity goes in before the count that may complete
        # the request, so stats include every image of a completed request.
        await run.tally.flush(rt)
    if counts:
        # Keyed: only what no one counted yet is added (the reconciler may have been first).
        await rt.requests.count_flush(request_id, token=run.token, counts=counts)
        run.counted.extend(
            entry.product.serial_number
            for _, entry in finishing
            if entry.product.serial_number in moved
        )
    return [
        _Flushed(redo=redo[i])
        if i in redo
        else _Flushed(status=moved.get(entry.product.serial_number))
        for i, entry in enumerate(batch)
    ]


def _test_crash_at_count(rt: WorkerRuntime, products: list[ProductRecord]) -> None:
    """Test-only: die like a process killed between a flush's final moves and its count."""
    marker = rt.settings.test_crash_at_count_marker
    if marker and any(marker in url for p in products for url in p.input_image_urls):
        os.kill(os.getpid(), signal.SIGKILL)


async def _announce(
    rt: WorkerRuntime,
    run: _Run,
    product: ProductRecord,
    results: list[ImageOutcome | ImageError],
    status: ProductStatus | None,
) -> None:
    """A product's events, once its flush has written and counted it."""
    if status is None:
        return
    images = [r if isinstance(r, ImageOutcome) else None for r in results]
    output_keys = [_primary_key(image) if image else None for image in images]
    errors = [r for r in results if isinstance(r, ImageError)]
    log_event(
        logger,
        "product.finished",
        request_id=product.request_id,
        serial=product.serial_number,
        status=status,
        failed=len(errors),
    )
    await product_finished(
        rt.events, product.request_id, product.serial_number, status, output_keys, errors
    )
    if errors:
        await announce_failed_images(rt, run.request, product, errors)


def _primary_key(image: ImageOutcome) -> str:
    return next(iter(image.rendered.variants.values())).key
