"""Processing products: their images (``worker.images``), many at once, then one transition.

A run of a chunk task holds a lease on each product it claimed and renews it while it works
(one bulk write per run every third of a lease, however many images it holds); the lease names
the process holding it (``worker.leases``). Only a product whose run is over may be taken over:
its lease ran out, or its holder is seen dead on this host. Only that counts as an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pymongo.errors import PyMongoError

from imgbatch.core.errors import ImageErrorCode
from imgbatch.core.logs import log_event
from imgbatch.domain.completion import complete_when_counted
from imgbatch.domain.events import product_finished
from imgbatch.domain.image_events import announce_failed_images
from imgbatch.domain.removal import release_media
from imgbatch.models.products import ImageError, ImageOutcome, ProductRecord, ProductStatus
from imgbatch.models.requests import RequestRecord, RequestStatus
from imgbatch.worker import leases
from imgbatch.worker.images import ImageJob, Known, hold_reused, known_sources, process_image
from imgbatch.worker.outcomes import Tally, count_outcomes
from imgbatch.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


@dataclass
class _Run:
    """One run of a chunk task: its token (its claims and the key its counts are made under),
    what it holds and what it counted."""

    request: RequestRecord
    lease: timedelta
    # Its products' activity, written once, before the run's last count (worker/outcomes.py).
    tally: Tally
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Claimed and not finished yet: what the run keeps leased.
    held: set[int] = field(default_factory=set)
    seq: int = 0
    counted: list[int] = field(default_factory=list)
    # A run's counts reach the request in order (see RequestRepository.count_product), so a
    # product's final move and its count happen under this lock; they are two short writes.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def process_products(rt: WorkerRuntime, request_id: str, serial_numbers: list[int]) -> None:
    """Process a chunk of one request's products, all at once.

    A prefork process would otherwise sit idle while one product's few images download; with
    a chunk in flight it decodes one image while the others' downloads proceed.
    """
    request = await rt.requests.get(request_id)
    if request is None or request.status != RequestStatus.IN_PROGRESS:
        return
    job = ImageJob.of(rt, request)
    run = _Run(request, timedelta(seconds=rt.settings.product_lease_seconds), Tally(request.owner))
    renewing = asyncio.create_task(_keep_leases(rt, run))
    try:
        with leases.running(run.token):
            await _run_chunk(rt, run, job, serial_numbers)
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
    # What a product that raised left in the tally (the others' went in before the last count).
    await run.tally.flush(rt)
    # Only after a clean run: one that raised (a database outage, say) may not know whether
    # its last count landed, so it leaves its counts and key for the reconciler to settle.
    await _settle_counts(rt, run)
    await complete_when_counted(rt, request_id)


async def _run_chunk(
    rt: WorkerRuntime, run: _Run, job: ImageJob, serial_numbers: list[int]
) -> None:
    if await rt.products.any_processing(run.request.id, serial_numbers):
        await _one_at_a_time(rt, run, job, serial_numbers)
        return
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


async def _keep_leases(rt: WorkerRuntime, run: _Run) -> None:
    """Renew the leases of what the run holds, every third of a lease, until cancelled."""
    while True:
        await asyncio.sleep(run.lease.total_seconds() / 3)
        try:
            await rt.products.renew_leases(run.request.id, sorted(run.held), lease=run.lease)
        except PyMongoError as exc:
            # The next renewal may get through before the lease runs out; the work goes on.
            log_event(
                logger, "product.lease_renewal_failed", logging.WARNING, error=type(exc).__name__
            )


async def _one_at_a_time(
    rt: WorkerRuntime, run: _Run, job: ImageJob, serial_numbers: list[int]
) -> None:
    """An earlier run of this chunk died holding products (or another run still holds them).

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


async def _run_product(
    rt: WorkerRuntime, run: _Run, job: ImageJob, product: ProductRecord, known: dict[str, Known]
) -> None:
    if product.attempts > rt.settings.max_attempts:
        # This product has taken its worker down every time it ran: stop feeding it to workers.
        await _finish(
            rt,
            run,
            product,
            _all_failed(
                product,
                ImageErrorCode.WORKER_CRASH,
                f"gave up after {product.attempts - 1} attempts",
                attempts=product.attempts - 1,
            ),
        )
        return
    semaphore = asyncio.Semaphore(rt.settings.product_image_concurrency)

    async def bounded(index: int, url: str, known: Known | None) -> ImageOutcome | ImageError:
        earlier = product.image(index)
        if earlier is not None and _done(product, index):
            return earlier  # done by an earlier run; a retry redoes only what failed
        async with semaphore:
            return await process_image(rt, job, product, index, url, known)

    urls = product.input_image_urls
    results = list(
        await asyncio.gather(*(bounded(i, url, known.get(url)) for i, url in enumerate(urls)))
    )
    # Unchanged sources are held in one write; any whose outputs went meanwhile are redone.
    for index in await hold_reused(rt, job, results):
        results[index] = await bounded(index, urls[index], None)
    await _finish(rt, run, product, results)


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


async def _finish(
    rt: WorkerRuntime, run: _Run, product: ProductRecord, results: list[ImageOutcome | ImageError]
) -> None:
    images = [r if isinstance(r, ImageOutcome) else None for r in results]
    output_keys = [_primary_key(image) if image else None for image in images]
    errors = [r for r in results if isinstance(r, ImageError)]
    async with run.lock:
        run.seq += 1
        status = await rt.products.finish(
            product.request_id,
            product.serial_number,
            output_keys=output_keys,
            errors=errors,
            images=images,
            count_token=run.token,
            count_seq=run.seq,
        )
        # Final either way; dropped here, under the lock, so the last product to get here
        # sees an empty set (its own finally-discard may come after another's count).
        run.held.discard(product.serial_number)
        if status is None:
            # Another run of this product got there first and counted it, or its request was
            # deleted while this run rendered: then what it stored is held for a request that
            # is gone, and released here (domain.deletion).
            if await rt.requests.get(product.request_id) is None:
                await release_media(rt, product.request_id)
            return
        await count_outcomes(rt, run.tally, product, results)
        if not run.held:
            # The run's last product: the activity goes in before the count that may complete
            # the request, so stats include every image of a completed request.
            await run.tally.flush(rt)
        # False only if the reconciler already completed this very count: it is in either way.
        await rt.requests.count_product(
            product.request_id,
            token=run.token,
            seq=run.seq,
            images_done=len(output_keys) - len(errors),
            images_failed=len(errors),
        )
        run.counted.append(product.serial_number)
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
