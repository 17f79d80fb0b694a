"""Processing products: download, compress and store their images, many at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field

from core.errors import ImageErrorCode, ImageFailure
from core.logs import log_event, redact_url
from domain.completion import complete_when_counted
from imaging import compress_image
from models.products import ImageError, ProductRecord
from models.requests import RequestStatus
from storage import output_key
from worker.downloads import download
from worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


@dataclass
class _Run:
    """One run of a chunk task: the key its counts are made under, and what it counted."""

    request_id: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
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
    run = _Run(request_id)
    if await rt.products.any_processing(request_id, serial_numbers):
        # An earlier run of this chunk died holding products. Go one at a time, so that a
        # product which kills its worker takes only itself down, and only it is ever failed.
        for serial_number in serial_numbers:
            product = await rt.products.claim(request_id, serial_number)
            if product is not None:  # None: already final, done by an earlier run
                await _process_product(rt, run, product)
    else:
        claimed = await rt.products.claim_many(request_id, serial_numbers)
        outcomes = await asyncio.gather(
            *(_process_product(rt, run, product) for product in claimed), return_exceptions=True
        )
        # Every product ran to its end before we raise: nothing is left half-done on the loop.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    # Only after a clean run: one that raised (a database outage, say) may not know whether
    # its last count landed, so it leaves its counts and key for the reconciler to settle.
    await _settle_counts(rt, run)
    await complete_when_counted(rt, request_id)


async def _settle_counts(rt: WorkerRuntime, run: _Run) -> None:
    if not run.counted:
        return  # it counted nothing, so it has no key on the request
    settled = await rt.products.mark_counted(run.request_id, run.counted)
    # If the reconciler took some of these over meanwhile, it still needs the run's key to
    # recognise a count that already landed; the key is one small entry, so it stays.
    if settled == len(run.counted):
        await rt.requests.forget_count_run(run.request_id, run.token)


async def _process_product(rt: WorkerRuntime, run: _Run, product: ProductRecord) -> None:
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
            ),
        )
        return
    semaphore = asyncio.Semaphore(rt.settings.product_image_concurrency)

    async def bounded(index: int, url: str) -> str | ImageError:
        existing = product.output_key(index)
        if existing is not None:  # done by an earlier run; a retry redoes only what failed
            return existing
        async with semaphore:
            return await _process_image(rt, product, index, url)

    results = await asyncio.gather(
        *(bounded(index, url) for index, url in enumerate(product.input_image_urls))
    )
    await _finish(rt, run, product, list(results))


async def _process_image(
    rt: WorkerRuntime, product: ProductRecord, index: int, url: str
) -> str | ImageError:
    """The stored key, or the image's error. Errors that are not the image's fault propagate."""
    marker = rt.settings.test_crash_marker
    if marker and marker in url:
        # Test-only: behave like an image that takes its worker process down with it.
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        data = await download(rt.http, url, rt.download_policy)
        async with rt.decode_slot:
            image = await asyncio.to_thread(
                compress_image,
                data,
                quality=rt.settings.jpeg_quality,
                max_pixels=rt.settings.max_image_pixels,
                optimize=rt.settings.jpeg_optimize,
            )
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
    key = output_key(product.request_id, product.serial_number, index)
    await rt.store.put(key, image.data, content_type="image/jpeg")
    log_event(logger, "image.stored", key=key, attempt=product.attempts, bytes=len(image.data))
    return key


def _all_failed(
    product: ProductRecord, code: ImageErrorCode, message: str
) -> list[str | ImageError]:
    return [
        ImageError(index=i, url=url, code=code, message=message)
        for i, url in enumerate(product.input_image_urls)
    ]


async def _finish(
    rt: WorkerRuntime, run: _Run, product: ProductRecord, results: list[str | ImageError]
) -> None:
    output_keys = [r if isinstance(r, str) else None for r in results]
    errors = [r for r in results if isinstance(r, ImageError)]
    async with run.lock:
        run.seq += 1
        status = await rt.products.finish(
            product.request_id,
            product.serial_number,
            output_keys=output_keys,
            errors=errors,
            count_token=run.token,
            count_seq=run.seq,
        )
        if status is None:
            return  # another run of this product got there first and counted it
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
