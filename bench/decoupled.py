"""The "separate download pool feeding an encode pool" design, measured without the stack.

Not imgbatch code: a minimal stand-in for the design question. Downloads run concurrently on
one asyncio loop (httpx, the worker's client library); each original is written to a temporary
file and only its path goes to a process pool that runs the pipeline's ``compress_image`` and
stores the output, as a download queue feeding a prefork encode queue would. There is no
Celery and no MongoDB here, so the gap between this and the real batch is their cost.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from imgbatch.imaging import compress_image

_QUALITY = 50
_MAX_PIXELS = 50_000_000


@dataclass
class DecoupledResult:
    images: int
    download_concurrency: int
    processes: int
    seconds: float
    images_per_s: float


def _encode_file(source: str, target: str) -> int:
    data = Path(source).read_bytes()
    os.unlink(source)
    out = compress_image(data, quality=_QUALITY, max_pixels=_MAX_PIXELS).data
    Path(target).write_bytes(out)
    return len(out)


def _warm() -> None:
    time.sleep(0.2)  # long enough that every pool process gets one, so all of them start


async def _run(
    base_url: str, urls: Sequence[str], workdir: Path, download_concurrency: int, processes: int
) -> float:
    """Seconds for all ``urls``, counted once the pool processes are up (startup is not work)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(download_concurrency)
    # The encode pool is the CPU: never hand it more than it can start, or originals pile up.
    encode_slots = asyncio.Semaphore(processes * 2)
    context = multiprocessing.get_context("spawn")
    limits = httpx.Limits(max_connections=download_concurrency)
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, _warm) for _ in range(processes)))
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

            async def one(index: int, url: str) -> None:
                async with gate:
                    response = await client.get(url)
                    response.raise_for_status()
                source = workdir / f"{index}.orig"
                source.write_bytes(response.content)
                async with encode_slots:
                    target = str(workdir / f"{index}.jpg")
                    await loop.run_in_executor(pool, _encode_file, str(source), target)

            await asyncio.gather(*(one(i, url) for i, url in enumerate(urls)))
        return time.perf_counter() - started


def run(
    base_url: str,
    photos: Sequence[str],
    products: int,
    download_concurrency: int = 32,
    processes: int | None = None,
) -> DecoupledResult:
    processes = processes or os.cpu_count() or 1
    urls = [
        f"/img/{name}?r=decoupled&p={serial}&i={index}"
        for serial in range(products)
        for index, name in enumerate(photos)
    ]
    with tempfile.TemporaryDirectory(prefix="imgbatch-decoupled-") as tmp:
        seconds = asyncio.run(_run(base_url, urls, Path(tmp), download_concurrency, processes))
    return DecoupledResult(
        images=len(urls),
        download_concurrency=download_concurrency,
        processes=processes,
        seconds=seconds,
        images_per_s=len(urls) / seconds,
    )
