"""Processing products: their images (``worker.images``), many at once, then one transition."""

from __future__ import annotations

import asyncio
import logging

from core.errors import ImageErrorCode
from core.logs import log_event
from domain.completion import complete_when_counted
from domain.events import product_finished
from models.products import ImageError, ImageOutcome, ProductRecord
from models.requests import RequestStatus
from worker.images import ImageJob, Known, hold_reused, known_sources, process_image
from worker.outcomes import count_outcomes
from worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


async def process_products(rt: WorkerRuntime, request_id: str, serial_numbers: list[int]) -> None:
    """Process a chunk of one request's products, all at once.

    A prefork process would otherwise sit idle while one product's few images download; with
    a chunk in flight it decodes one image while the others' downloads proceed.
    """
    request = await rt.requests.get(request_id)
    if request is None or request.status != RequestStatus.IN_PROGRESS:
        return
    job = ImageJob.of(rt, request)
    if await rt.products.any_processing(request_id, serial_numbers):
        # An earlier run of this chunk died holding products. Go one at a time, so that a
        # product which kills its worker takes only itself down, and only it is ever failed.
        for serial_number in serial_numbers:
            product = await rt.products.claim(request_id, serial_number)
            if product is not None:  # None: already final, done by an earlier run
                known = await known_sources(rt, job, _todo(product))
                await _process_product(rt, job, product, known)
    else:
        claimed = await rt.products.claim_many(request_id, serial_numbers)
        # What this owner's URLs answered last time, for conditional requests: for the chunk.
        known = await known_sources(rt, job, [url for p in claimed for url in _todo(p)])
        outcomes = await asyncio.gather(
            *(_process_product(rt, job, product, known) for product in claimed),
            return_exceptions=True,
        )
        # Every product ran to its end before we raise: nothing is left half-done on the loop.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    await complete_when_counted(rt, request_id)


async def _process_product(
    rt: WorkerRuntime, job: ImageJob, product: ProductRecord, known: dict[str, Known]
) -> None:
    if product.attempts > rt.settings.max_attempts:
        # This product has taken its worker down every time it ran: stop feeding it to workers.
        await _finish(
            rt,
            product,
            _all_failed(
                product,
                ImageErrorCode.WORKER_CRASH,
                f"gave up after {product.attempts - 1} attempts",
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
    await _finish(rt, product, results)


def _done(product: ProductRecord, index: int) -> bool:
    return product.output_key(index) is not None and product.image(index) is not None


def _todo(product: ProductRecord) -> list[str]:
    return [url for i, url in enumerate(product.input_image_urls) if not _done(product, i)]


def _all_failed(
    product: ProductRecord, code: ImageErrorCode, message: str
) -> list[ImageOutcome | ImageError]:
    return [
        ImageError(index=i, url=url, code=code, message=message)
        for i, url in enumerate(product.input_image_urls)
    ]


async def _finish(
    rt: WorkerRuntime, product: ProductRecord, results: list[ImageOutcome | ImageError]
) -> None:
    images = [r if isinstance(r, ImageOutcome) else None for r in results]
    output_keys = [_primary_key(image) if image else None for image in images]
    errors = [r for r in results if isinstance(r, ImageError)]
    status = await rt.products.finish(
        product.request_id,
        product.serial_number,
        output_keys=output_keys,
        errors=errors,
        images=images,
    )
    if status is None:
        return  # another run of this product got there first and counted it
    log_event(
        logger,
        "product.finished",
        request_id=product.request_id,
        serial=product.serial_number,
        status=status,
        failed=len(errors),
    )
    await rt.requests.count_product(
        product.request_id,
        images_done=len(output_keys) - len(errors),
        images_failed=len(errors),
    )
    await product_finished(
        rt.events, product.request_id, product.serial_number, status, output_keys, errors
    )
    await count_outcomes(rt, product, results)


def _primary_key(image: ImageOutcome) -> str:
    return next(iter(image.rendered.variants.values())).key
