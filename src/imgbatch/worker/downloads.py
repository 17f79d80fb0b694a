"""Downloading one image from a user-supplied URL, safely and with bounded cost.

Everything here assumes the URL is hostile:

* Connections only go through :func:`netguard.guarded_client`; redirects are followed
  here, by hand, and every hop goes through :func:`netguard.check_url` and the guarded
  client again, so a public URL cannot bounce us to ``169.254.169.254``.
* Memory is bounded by ``max_bytes``: a ``Content-Length`` above it is refused before the body
  is read, and streamed bytes are counted for responses without one (chunked) or that lie. A
  ``gzip``/``deflate`` body sent despite ``Accept-Encoding: identity`` is decompressed with the
  same bound on the *decoded* size, so a compression bomb cannot expand in memory. Across the
  process, bodies are bounded by a :class:`~worker.budget.DownloadBudget`: given a lease, a
  download reserves its bytes after the headers and before reading the body. Time spent waiting
  for the budget is not charged to the deadline (it is our queue, not the origin's slowness).
* Time is bounded by ``deadline``, **per attempt**: one ``asyncio.timeout`` wraps the whole
  attempt (every redirect hop, headers and the full body). httpx's read timeout is per read, so
  a server trickling one byte every few seconds would otherwise never time out. Per attempt
  rather than for the whole download so that a retry after a slow failure still gets a full
  chance; the worst case for one image is ``attempts * deadline`` plus the backoff sleeps
  (each capped at ``backoff_max``).
* Retries (tenacity) only for failures that may heal: connection errors, timeouts, 5xx and 429.
  ``Retry-After`` (seconds or HTTP-date) is honoured, capped at ``backoff_max``; otherwise the
  wait is capped exponential backoff with jitter. Other 4xx, refused addresses, oversize bodies
  and bad URLs fail at once.
* Messages never contain query strings or userinfo (signed URLs carry tokens there).
* Conditional requests (:func:`fetch` with ``conditional``): ``If-None-Match`` /
  ``If-Modified-Since`` go with every hop, and a ``304`` is its own outcome (no body, the
  earlier bytes are still current), never an error. The same guard, deadline and retries apply.

Whether the bytes are an image is not judged here; the image module sniffs the content.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from imgbatch.core import metrics
from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.core.logs import redact_url, scrub_message
from imgbatch.netguard import (
    BlockedAddress,
    InvalidTarget,
    NetworkPolicy,
    check_url,
    retry_after_seconds,
)
from imgbatch.netguard.aio import pinned_client
from imgbatch.worker.budget import BudgetLease

if TYPE_CHECKING:
    from imgbatch.core.settings import Settings

__all__ = [
    "USER_AGENT",
    "DownloadPolicy",
    "Fetched",
    "Validators",
    "download",
    "download_client",
    "fetch",
]

logger = logging.getLogger(__name__)

USER_AGENT = "imgbatch/0.1"
# identity: we want the bytes the origin stores, and a compressed body's size says nothing about
# the memory it will take.
_REQUEST_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept-Encoding": "identity",
    "Accept": "image/*,*/*;q=0.8",
}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NOT_MODIFIED = 304
_MAX_VALIDATOR = 256
_ZLIB_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})


@dataclass(frozen=True)
class Validators:
    """What identifies a version of a resource: its ``ETag`` and ``Last-Modified``."""

    etag: str | None = None
    last_modified: str | None = None

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def conditional_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    @classmethod
    def of(cls, response: httpx.Response) -> Validators:
        # Capped: these are stored and sent back, and a hostile origin chooses them.
        etag = response.headers.get("etag")
        last_modified = response.headers.get("last-modified")
        return cls(
            etag=etag if etag and len(etag) <= _MAX_VALIDATOR else None,
            last_modified=last_modified
            if last_modified and len(last_modified) <= _MAX_VALIDATOR
            else None,
        )


@dataclass(frozen=True)
class Fetched:
    """A download's outcome: the body, or ``None`` when a conditional request got ``304``."""

    data: bytes | None
    validators: Validators

    @property
    def not_modified(self) -> bool:
        return self.data is None


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits for one download. ``deadline`` is per attempt (see the module docstring)."""

    network: NetworkPolicy
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    deadline: float = 60.0
    max_redirects: int = 5
    max_bytes: int = 25 * 1024 * 1024
    attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # Downloads one process may have in flight: its chunk's products x images per product.
    connections: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadPolicy:
        return cls(
            network=NetworkPolicy.from_settings(settings),
            connect_timeout=settings.download_connect_timeout,
            read_timeout=settings.download_read_timeout,
            deadline=settings.download_deadline,
            max_redirects=settings.download_max_redirects,
            max_bytes=settings.max_image_bytes,
            attempts=settings.download_attempts,
            backoff_initial=settings.download_backoff_initial,
            backoff_max=settings.download_backoff_max,
            connections=settings.products_per_task * settings.product_image_concurrency,
        )


def download_client(policy: DownloadPolicy) -> httpx.AsyncClient:
    """The guarded client downloads use; build one per worker process and reuse it."""
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.connect_timeout,
    )
    # As many kept-alive connections as there can be downloads in flight. httpcore closes an
    # idle connection whenever the pool holds more than max_keepalive_connections (default 20)
    # connections of any state, so with 24+ downloads in flight nearly every response closed
    # its connection (455 connections for 480 downloads, measured) and the next download paid
    # a new connect, address check and, on a real CDN, TLS handshake.
    limits = httpx.Limits(
        max_connections=policy.connections, max_keepalive_connections=policy.connections
    )
    # aiohttp moves the bytes (a third of httpx's CPU per download), behind the same guard.
    return pinned_client(policy.network, timeout=timeout, headers=_REQUEST_HEADERS, limits=limits)


# --------------------------------------------------------------------------------------------
# Transient failures: raised inside one attempt, retried, and turned into an ImageFailure only
# once attempts run out. Anything else (ImageFailure) ends the download immediately.
# --------------------------------------------------------------------------------------------


class _Transient(Exception):
    code: ImageErrorCode = ImageErrorCode.DOWNLOAD_FAILED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def failure(self, attempts: int) -> ImageFailure:
        suffix = f" after {attempts} attempts" if attempts > 1 else ""
        return ImageFailure(self.code, scrub_message(self.detail + suffix), attempts=attempts)


class _RetryableStatus(_Transient):
    code = ImageErrorCode.HTTP_ERROR

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _TimedOut(_Transient):
    code = ImageErrorCode.TIMEOUT


class _ConnectionFailed(_Transient):
    code = ImageErrorCode.DOWNLOAD_FAILED


def _wait_strategy(policy: DownloadPolicy) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _RetryableStatus) and error.retry_after is not None:
            return min(error.retry_after, policy.backoff_max)
        # Capped exponential backoff with "equal jitter": half fixed, half random, so that
        # many workers retrying the same sick origin spread out but never retry instantly.
        ceiling = min(
            policy.backoff_max, policy.backoff_initial * 2.0 ** (state.attempt_number - 1)
        )
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    return wait


def _log_retry(url: str) -> Callable[[RetryCallState], None]:
    safe = redact_url(url)

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        wait = float(state.next_action.sleep) if state.next_action is not None else 0.0
        logger.info(
            "download %s failed (%s); retrying in %.2fs (attempt %d)",
            safe,
            scrub_message(str(error)),
            wait,
            state.attempt_number + 1,
        )

    return before_sleep


# --------------------------------------------------------------------------------------------
# One attempt
# --------------------------------------------------------------------------------------------


async def _wait_for_budget(lease: BudgetLease, size: int, deadline: asyncio.Timeout) -> None:
    """Reserve ``size`` bytes with the attempt's deadline paused while waiting."""
    loop = asyncio.get_running_loop()
    when = deadline.when()
    remaining = None if when is None else when - loop.time()
    deadline.reschedule(None)
    try:
        await lease.reserve(size)
    finally:
        deadline.reschedule(None if remaining is None else loop.time() + remaining)


async def _read_body(
    response: httpx.Response,
    max_bytes: int,
    lease: BudgetLease | None,
    deadline: asyncio.Timeout,
) -> bytes:
    raw_length = response.headers.get("content-length", "").strip()
    declared = int(raw_length) if raw_length.isdigit() else None
    if declared is not None and declared > max_bytes:
        raise ImageFailure(
            ImageErrorCode.TOO_LARGE,
            f"Content-Length {declared} exceeds the limit of {max_bytes} bytes",
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        decoder = None
    elif encoding in _ZLIB_ENCODINGS:
        decoder = zlib.decompressobj(wbits=47)  # 32 + 15: accept a gzip or zlib header
    else:
        raise ImageFailure(
            ImageErrorCode.DOWNLOAD_FAILED, f"unsupported Content-Encoding {encoding!r}"
        )
    if decoder is None and declared is not None:
        if lease is not None:
            await _wait_for_budget(lease, declared, deadline)
        return await _read_exact(response, declared)
    if lease is not None:
        # The size is unknown until the end: reserve the cap and give back what was not used
        # (worker/budget.py says why not in increments).
        await _wait_for_budget(lease, max_bytes, deadline)

    too_large = ImageFailure(
        ImageErrorCode.TOO_LARGE, f"body exceeds the limit of {max_bytes} bytes"
    )
    # Of unknown size: chunks joined once at the end. Growing one buffer re-copies it and
    # faults in fresh pages as it moves, which made reading a 1.6 MB body cost 1.3 ms of CPU
    # (bench/README.md).
    chunks: list[bytes] = []
    size = 0
    try:
        # aiter_raw, not aiter_bytes: httpx would decompress without any bound on the output.
        async for chunk in response.aiter_raw():
            if decoder is not None:
                # max_length one past the remaining budget: getting that many bytes back means
                # the body is too large, without ever holding more than the budget + 1.
                chunk = decoder.decompress(chunk, max_bytes - size + 1)
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise too_large
        if decoder is not None:
            chunks.append(decoder.flush(max_bytes - size + 1))
            size += len(chunks[-1])
            if size > max_bytes:
                raise too_large
    except zlib.error as bad:
        raise ImageFailure(
            ImageErrorCode.DOWNLOAD_FAILED, f"could not decode {encoding} body: {bad}"
        ) from None
    if lease is not None:
        lease.trim(size)
    return b"".join(chunks)


async def _read_exact(response: httpx.Response, length: int) -> bytes:
    """A body whose size HTTP framing fixes, read into one buffer of that size.

    Not chunks joined at the end: with a dozen large bodies in flight, their interleaved 64 KB
    chunks fragmented the heap so much that 240 MB of bodies took 620 MB of RSS (measured with
    twelve 20 MB bodies; one buffer each: 370 MB). The final copy to ``bytes`` lets the decoder
    share the buffer instead of copying it.
    """
    buffer = bytearray(length)
    size = 0
    with memoryview(buffer) as view:
        async for chunk in response.aiter_raw():
            end = size + len(chunk)
            if end > length:  # h11 stops at Content-Length; never write past the buffer anyway
                raise ImageFailure(
                    ImageErrorCode.DOWNLOAD_FAILED, "body is longer than its Content-Length"
                )
            view[size:end] = chunk
            size = end
    return bytes(buffer) if size == length else bytes(buffer[:size])


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    lease: BudgetLease | None,
    deadline: asyncio.Timeout,
    conditional: Validators | None,
) -> Fetched:
    """One attempt: request, follow redirects by hand (each hop checked), read the body."""
    target = check_url(url, policy.network)
    headers = {**_REQUEST_HEADERS, **(conditional.conditional_headers() if conditional else {})}
    redirects = 0
    while True:
        request = client.build_request("GET", target, headers=headers)
        response = await client.send(request, stream=True)
        try:
            status = response.status_code
            if status in _REDIRECT_STATUSES and "location" in response.headers:
                if redirects >= policy.max_redirects:
                    raise ImageFailure(ImageErrorCode.DOWNLOAD_FAILED, "too many redirects")
                redirects += 1
                try:
                    following = target.join(response.headers["location"])
                except httpx.InvalidURL as bad:
                    raise InvalidTarget(f"invalid redirect Location: {bad}") from None
                target = check_url(following, policy.network)
                continue
            if status == _NOT_MODIFIED and conditional:
                # A 304 has no body (h11 enforces it); reading its end keeps the connection
                # for the next request instead of closing it unread (measured: a new
                # connection per revalidation otherwise). Not _read_body: a 304 may repeat the
                # resource's Content-Length, which must neither be reserved nor refused.
                await response.aread()
                return Fetched(None, Validators.of(response) or conditional)
            if 200 <= status < 300:
                body = await _read_body(response, policy.max_bytes, lease, deadline)
                return Fetched(body, Validators.of(response))
            if status == 429 or status >= 500:
                raise _RetryableStatus(
                    status, retry_after_seconds(response.headers.get("retry-after"))
                )
            raise ImageFailure(ImageErrorCode.HTTP_ERROR, f"HTTP {status}")
        finally:
            # Closing a response whose body was not read drops the connection, which is what
            # we want for refused and redirect responses: never drain an attacker's body.
            await response.aclose()


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    lease: BudgetLease | None,
    conditional: Validators | None,
) -> Fetched:
    """One attempt under the deadline, with every failure sorted into final or transient."""
    try:
        return await _deadlined(client, url, policy, lease, conditional)
    except BaseException:
        if lease is not None:
            lease.release()  # whatever this attempt read is garbage now
        raise


async def _deadlined(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    lease: BudgetLease | None,
    conditional: Validators | None,
) -> Fetched:
    try:
        async with asyncio.timeout(policy.deadline) as deadline:
            return await _fetch(client, url, policy, lease, deadline, conditional)
    except TimeoutError:
        raise _TimedOut(f"no complete response within the {policy.deadline:g}s deadline") from None
    except BlockedAddress as blocked:
        raise ImageFailure(ImageErrorCode.BLOCKED_ADDRESS, scrub_message(str(blocked))) from None
    except InvalidTarget as bad:
        raise ImageFailure(ImageErrorCode.DOWNLOAD_FAILED, scrub_message(str(bad))) from None
    except httpx.ConnectTimeout:
        raise _TimedOut("connect timed out") from None
    except httpx.ReadTimeout:
        raise _TimedOut("read timed out") from None
    except httpx.TimeoutException as timed_out:
        raise _TimedOut(f"timed out ({type(timed_out).__name__})") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as bad:
        raise ImageFailure(ImageErrorCode.DOWNLOAD_FAILED, scrub_message(str(bad))) from None
    except httpx.TransportError as failed:
        # Refused, reset, DNS failure, server hung up mid-body: may heal, so retried.
        detail = str(failed) or type(failed).__name__
        raise _ConnectionFailed(f"connection failed: {detail}") from None


async def download(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    lease: BudgetLease | None = None,
) -> bytes:
    """Fetch ``url`` and return its body, or raise :class:`ImageFailure`.

    ``client`` must come from :func:`download_client` (or :func:`netguard.guarded_client`):
    the SSRF guarantee is the client's, this function only adds per-hop checks on top. With a
    ``lease``, the body is reserved in its budget before it is read and stays reserved (trimmed
    to its size) on return; a failed attempt gives its bytes back. The caller releases it.
    """
    fetched = await fetch(client, url, policy, lease=lease)
    assert fetched.data is not None, "only a conditional request can be answered 304"
    return fetched.data


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    *,
    lease: BudgetLease | None = None,
    conditional: Validators | None = None,
) -> Fetched:
    """:func:`download`, plus the response's validators, optionally as a conditional request.

    With ``conditional`` (validators of bytes we still have), a ``304`` returns a
    :class:`Fetched` without data instead of downloading the body again (and reserves nothing
    in the ``lease``).
    """
    # The phase's time includes retries and their backoff: it is what the image waited.
    with metrics.IMAGE_PHASE_SECONDS.labels("download").time():
        fetched = await _fetch_retrying(client, url, policy, lease, conditional or None)
    if fetched.data is not None:
        metrics.DOWNLOAD_BYTES.inc(len(fetched.data))
    return fetched


async def _fetch_retrying(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    lease: BudgetLease | None,
    conditional: Validators | None,
) -> Fetched:
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, policy.attempts)),
        wait=_wait_strategy(policy),
        retry=retry_if_exception_type(_Transient),
        before_sleep=_log_retry(url),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await _attempt(client, url, policy, lease, conditional)
    except _Transient as exhausted:
        raise exhausted.failure(max(1, policy.attempts)) from None
    raise AssertionError("unreachable: tenacity either returns or re-raises")
