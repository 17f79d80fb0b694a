"""Processing products: download, compress and store their images, many at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from core import metrics
from core.errors import ImageErrorCode, ImageFailure
from core.logs import log_event, redact_url
from domain.completion import complete_when_counted
from domain.events import product_finished
from imaging import CompressedImage, compress_image
from models.products import ImageError, ProductRecord
from models.requests import RequestStatus
from storage import output_key
from worker.downloads import download
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
    if await rt.products.any_processing(request_id, serial_numbers):
        # An earlier run of this chunk died holding products. Go one at a time, so that a
        # product which kills its worker takes only itself down, and only it is ever failed.
        for serial_number in serial_numbers:
            product = await rt.products.claim(request_id, serial_number)
            if product is not None:  # None: already final, done by an earlier run
                await _process_product(rt, product)
    else:
        claimed = await rt.products.claim_many(request_id, serial_numbers)
        outcomes = await asyncio.gather(
            *(_process_product(rt, product) for product in claimed), return_exceptions=True
        )
        # Every product ran to its end before we raise: nothing is left half-done on the loop.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    await complete_when_counted(rt, request_id)


async def _process_product(rt: WorkerRuntime, product: ProductRecord) -> None:
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

    async def bounded(index: int, url: str) -> str | ImageError:
        existing = product.output_key(index)
        if existing is not None:  # done by an earlier run; a retry redoes only what failed
            return existing
        async with semaphore:
            return await _process_image(rt, product, index, url)

    results = await asyncio.gather(
        *(bounded(index, url) for index, url in enumerate(product.input_image_urls))
    )
    await _finish(rt, product, list(results))


async def _process_image(
    rt: WorkerRuntime, product: ProductRecord, index: int, url: str
) -> str | ImageError:
    """The stored key, or the image's error. Errors that are not the image's fault propagate."""
    marker = rt.settings.test_crash_marker
    if marker and marker in url:
        # Test-only: behave like an image that takes its worker process down with it.
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        image = await _download_and_compress(rt, url)
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
    with metrics.IMAGE_PHASE_SECONDS.labels("store").time():
        await rt.store.put(key, image.data, content_type="image/jpeg")
    metrics.OUTPUT_BYTES.labels("jpeg").inc(len(image.data))
    log_event(logger, "image.stored", key=key, attempt=product.attempts, bytes=len(image.data))
    return key


async def _download_and_compress(rt: WorkerRuntime, url: str) -> CompressedImage:
    # The body counts against the process's download budget from before it is read until it
    # has been compressed, the span in which it waits for the one decode slot.
    lease = rt.download_budget.lease()
    try:
        data = await download(rt.http, url, rt.download_policy, lease)
        async with rt.decode_slot:
            return await asyncio.to_thread(
                compress_image,
                data,
                quality=rt.settings.jpeg_quality,
                max_pixels=rt.settings.max_image_pixels,
                optimize=rt.settings.jpeg_optimize,
                max_jpeg_scans=rt.settings.max_jpeg_scans,
                decode_seconds=rt.settings.decode_cpu_seconds,
            )
    finally:
        lease.release()


def _all_failed(
    product: ProductRecord, code: ImageErrorCode, message: str
) -> list[str | ImageError]:
    return [
        ImageError(index=i, url=url, code=code, message=message)
        for i, url in enumerate(product.input_image_urls)
    ]


async def _finish(
    rt: WorkerRuntime, product: ProductRecord, results: list[str | ImageError]
) -> None:
    output_keys = [r if isinstance(r, str) else None for r in results]
    errors = [r for r in results if isinstance(r, ImageError)]
    status = await rt.products.finish(
        product.request_id, product.serial_number, output_keys=output_keys, errors=errors
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
