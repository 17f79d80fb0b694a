"""Downloading one image, against a real loopback origin (tests/support/origin.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.netguard import NetworkPolicy
from imgbatch.worker.downloads import (
    USER_AGENT,
    DownloadPolicy,
    Fetched,
    Validators,
    download,
    download_client,
)
from imgbatch.worker.downloads import fetch as fetch_url
from tests.support.listeners import Listener
from tests.support.origin import Origin

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
CHELSEA = (CORPUS / "chelsea.jpg").read_bytes()

POLICY = DownloadPolicy(
    network=NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset()),
    connect_timeout=2.0,
    read_timeout=2.0,
    deadline=5.0,
    max_redirects=3,
    max_bytes=10 * 1024 * 1024,
    attempts=3,
    backoff_initial=0.01,
    backoff_max=0.05,
)


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin(CORPUS) as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh_log(origin: Origin) -> None:
    origin.requests.clear()


def fetch(url: str, policy: DownloadPolicy = POLICY) -> bytes:
    async def run() -> bytes:
        async with download_client(policy) as client:
            return await download(client, url, policy)

    return asyncio.run(run())


def failure(url: str, policy: DownloadPolicy = POLICY) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        fetch(url, policy)
    return caught.value


# --------------------------------------------------------------------------------------------
# success
# --------------------------------------------------------------------------------------------


def test_happy_path_returns_the_file_bytes(origin: Origin) -> None:
    assert fetch(origin.url("/img/chelsea.jpg")) == CHELSEA
    assert list(origin.requests) == ["/img/chelsea.jpg"]
    headers = origin.requests.headers(0)
    assert headers["accept-encoding"] == "identity"
    assert headers["user-agent"] == USER_AGENT


def test_chunked_body_without_length(origin: Origin) -> None:
    assert fetch(origin.url("/chunked/chelsea.jpg")) == CHELSEA


def test_gzip_despite_identity_is_decoded(origin: Origin) -> None:
    assert fetch(origin.url("/gzip/chelsea.jpg")) == CHELSEA


def test_one_client_serves_many_concurrent_downloads(origin: Origin) -> None:
    names = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"] * 10

    async def run() -> list[bytes]:
        async with download_client(POLICY) as client:
            return await asyncio.gather(
                *(download(client, origin.url(f"/img/{n}"), POLICY) for n in names)
            )

    bodies = asyncio.run(run())
    assert [len(b) for b in bodies] == [(CORPUS / n).stat().st_size for n in names]


def test_concurrent_downloads_reuse_kept_alive_connections(origin: Origin) -> None:
    # 24 in flight, as a worker has with a chunk of 8 three-image products: httpx's default
    # pool closed an idle connection whenever it held more than 20, i.e. after nearly every
    # response, so each download paid a new connection (and, on a real CDN, a TLS handshake).
    before = origin.connections

    async def run() -> None:
        async with download_client(POLICY) as client:

            async def one_lane(lane: int) -> None:
                for i in range(10):
                    await download(client, origin.url(f"/img/chelsea.jpg?l={lane}&i={i}"), POLICY)

            await asyncio.gather(*(one_lane(lane) for lane in range(24)))

    asyncio.run(run())
    assert len(origin.requests) == 240
    assert origin.connections - before <= 24


def test_policy_from_settings() -> None:
    from imgbatch.core.settings import Settings

    settings = Settings(download_attempts=4, max_image_bytes=1234, allowed_ports=[80])
    policy = DownloadPolicy.from_settings(settings)
    assert policy.attempts == 4
    assert policy.max_bytes == 1234
    assert policy.network == NetworkPolicy(False, frozenset({80}))
    assert policy.deadline == settings.download_deadline
    assert policy.connections == settings.products_per_task * settings.product_image_concurrency


# --------------------------------------------------------------------------------------------
# HTTP errors and retries
# --------------------------------------------------------------------------------------------


def test_404_fails_without_retry(origin: Origin) -> None:
    error = failure(origin.url("/status/404"))
    assert error.code is ImageErrorCode.HTTP_ERROR
    assert error.message == "HTTP 404"
    assert origin.requests.count("/status/404") == 1


def test_flaky_503_then_success_is_retried(origin: Origin) -> None:
    assert fetch(origin.url("/flaky/two-then-ok/2/chelsea.jpg")) == CHELSEA
    assert origin.requests.count("/flaky/two-then-ok/") == 3


def test_503_forever_fails_after_all_attempts(origin: Origin) -> None:
    error = failure(origin.url("/status/503"))
    assert error.code is ImageErrorCode.HTTP_ERROR
    assert error.message == "HTTP 503 after 3 attempts"
    assert origin.requests.count("/status/503") == 3


def test_429_retry_after_seconds_is_honoured(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, attempts=2, backoff_max=5.0)
    started = time.monotonic()
    error = failure(origin.url("/status/429?retry_after=1"), policy)
    elapsed = time.monotonic() - started
    assert error.code is ImageErrorCode.HTTP_ERROR
    assert error.message == "HTTP 429 after 2 attempts"
    assert origin.requests.count("/status/429") == 2
    assert elapsed >= 0.9  # waited for Retry-After, not the 10 ms backoff


# "²" as the origin sends it in Latin-1, and as UTF-8 bytes (what the Latin-1 "Â²" encodes to).
@pytest.mark.parametrize("hint", ["\u00b2", "\u00c2\u00b2"], ids=["latin-1", "utf-8"])
def test_a_non_ascii_digit_retry_after_is_ignored_not_a_crash(origin: Origin, hint: str) -> None:
    error = failure(origin.url(f"/status/503?retry_after={quote(hint)}"))
    assert error.code is ImageErrorCode.HTTP_ERROR
    assert error.message == "HTTP 503 after 3 attempts"


def test_retry_after_http_date_is_honoured(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, attempts=2, backoff_max=5.0)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # 1-2 s away (1 s resolution)
    started = time.monotonic()
    failure(origin.url(f"/status/503?retry_after={quote(when)}"), policy)
    assert time.monotonic() - started >= 0.5


def test_retry_after_is_capped_by_backoff_max(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, attempts=2, backoff_max=0.1)
    started = time.monotonic()
    failure(origin.url("/status/503?retry_after=3600"), policy)
    assert time.monotonic() - started < 3  # an hour was asked for; the cap wins


# --------------------------------------------------------------------------------------------
# redirects
# --------------------------------------------------------------------------------------------


def test_redirect_chain_within_limit(origin: Origin) -> None:
    assert fetch(origin.url("/redirect-chain/3/chelsea.jpg")) == CHELSEA
    assert origin.requests.count("/redirect-chain/") == 4


def test_redirect_chain_beyond_limit(origin: Origin) -> None:
    error = failure(origin.url("/redirect-chain/4/chelsea.jpg"))
    assert error.code is ImageErrorCode.DOWNLOAD_FAILED
    assert error.message == "too many redirects"
    assert origin.requests.count("/redirect-chain/") == 4  # never retried, 5th hop never sent


def test_zero_redirects_allowed(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, max_redirects=0)
    assert failure(origin.url("/redirect-chain/1/chelsea.jpg"), policy).message == (
        "too many redirects"
    )


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(origin: Origin, code: int) -> None:
    target = quote(origin.url("/img/chelsea.jpg"), safe="")
    assert fetch(origin.url(f"/redirect?to={target}&code={code}")) == CHELSEA


def test_relative_location(origin: Origin) -> None:
    assert fetch(origin.url("/redirect?to=%2Fimg%2Fchelsea.jpg")) == CHELSEA


def test_redirect_to_a_port_not_allowed_is_blocked(origin: Origin, listener: Listener) -> None:
    # Private networks allowed (the origin is loopback) but only the origin's port: the
    # redirect target is re-checked and refused, and never sees a connection.
    policy = dataclasses.replace(
        POLICY,
        network=NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({origin.port})),
    )
    target = quote(f"http://127.0.0.1:{listener.port}/secret?token=hunter2", safe="")
    error = failure(origin.url(f"/redirect?to={target}"), policy)
    assert error.code is ImageErrorCode.BLOCKED_ADDRESS
    assert f"port {listener.port}" in error.message
    assert "hunter2" not in error.message
    assert listener.accepted == 0
    assert origin.requests.count("/redirect") == 1  # blocked is never retried


def test_redirect_to_another_scheme_fails(origin: Origin) -> None:
    error = failure(origin.url("/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd"))
    assert error.code is ImageErrorCode.DOWNLOAD_FAILED
    assert "scheme" in error.message


def test_redirect_to_a_url_with_credentials_is_refused_and_says_why(
    origin: Origin, listener: Listener
) -> None:
    target = quote(f"http://user:hunter2@127.0.0.1:{listener.port}/a.jpg", safe="")
    error = failure(origin.url(f"/redirect?to={target}"))
    assert error.code is ImageErrorCode.DOWNLOAD_FAILED
    assert "user name or password" in error.message
    assert "hunter2" not in error.message
    assert listener.accepted == 0
    assert origin.requests.count("/redirect") == 1


def test_blocked_address_is_not_retried(listener: Listener) -> None:
    strict = dataclasses.replace(POLICY, network=NetworkPolicy(False, frozenset()))
    for url in (f"http://127.0.0.1:{listener.port}/a.jpg", f"http://localhost:{listener.port}/"):
        assert failure(url, strict).code is ImageErrorCode.BLOCKED_ADDRESS
    assert listener.accepted == 0


# --------------------------------------------------------------------------------------------
# size limits
# --------------------------------------------------------------------------------------------


def test_content_length_over_limit_is_refused_before_reading(origin: Origin) -> None:
    started = time.monotonic()
    error = failure(origin.url(f"/huge?claim={50 * 1024**3}"))
    assert error.code is ImageErrorCode.TOO_LARGE
    assert "Content-Length" in error.message
    assert time.monotonic() - started < 2  # 50 GiB were not read
    assert origin.requests.count("/huge") == 1


def test_chunked_body_over_limit(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, max_bytes=10_000)
    error = failure(origin.url("/chunked/chelsea.jpg"), policy)
    assert error.code is ImageErrorCode.TOO_LARGE
    assert origin.requests.count("/chunked") == 1


def test_gzip_body_counts_decoded_bytes(origin: Origin) -> None:
    # The compressed body fits; the decoded one does not. A decompression bomb stops here.
    policy = dataclasses.replace(POLICY, max_bytes=len(CHELSEA) - 1)
    assert failure(origin.url("/gzip/chelsea.jpg"), policy).code is ImageErrorCode.TOO_LARGE


def test_exact_limit_is_allowed(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, max_bytes=len(CHELSEA))
    assert fetch(origin.url("/chunked/chelsea.jpg"), policy) == CHELSEA


# --------------------------------------------------------------------------------------------
# time limits and connection failures
# --------------------------------------------------------------------------------------------


def test_trickle_hits_the_deadline(origin: Origin) -> None:
    # Each byte arrives well within the read timeout; only the per-attempt deadline stops it.
    policy = dataclasses.replace(POLICY, deadline=0.5, read_timeout=2.0, attempts=2)
    started = time.monotonic()
    error = failure(origin.url("/trickle/chelsea.jpg?interval=0.05"), policy)
    elapsed = time.monotonic() - started
    assert error.code is ImageErrorCode.TIMEOUT
    assert "deadline" in error.message
    assert origin.requests.count("/trickle") == 2
    assert elapsed < 2 * 0.5 + 1.0


def test_slow_headers_beyond_read_timeout(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, read_timeout=0.3, attempts=2)
    error = failure(origin.url("/slow/chelsea.jpg?delay=2"), policy)
    assert error.code is ImageErrorCode.TIMEOUT
    assert error.message == "read timed out after 2 attempts"
    assert origin.requests.count("/slow") == 2


def test_connection_refused(origin: Origin) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens here now
    error = failure(f"http://127.0.0.1:{port}/a.jpg?token=hunter2")
    assert error.code is ImageErrorCode.DOWNLOAD_FAILED
    assert error.message.startswith("connection failed")
    assert error.message.endswith("after 3 attempts")
    assert "hunter2" not in error.message


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.jpg", "not a url", "", "http://", "javascript:alert(1)"]
)
def test_invalid_urls_fail_without_network(url: str) -> None:
    assert failure(url).code is ImageErrorCode.DOWNLOAD_FAILED


def test_error_messages_never_contain_query_strings(origin: Origin) -> None:
    for path in ("/status/404?token=hunter2", "/status/503?token=hunter2"):
        error = failure(origin.url(path), dataclasses.replace(POLICY, attempts=1))
        assert "hunter2" not in error.message
        assert "hunter2" not in str(error)


def test_logs_never_contain_query_strings(origin: Origin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # Our processes quiet httpx to WARNING; an operator may turn it back up.
    caplog.set_level(logging.INFO, logger="httpx")
    fetch(origin.url("/img/chelsea.jpg?token=hunter2"))
    failure(origin.url("/status/503?token=hunter2"))  # retries log too
    assert "HTTP Request" in caplog.text  # httpx's own request log line is still there...
    assert "retrying" in caplog.text
    assert "hunter2" not in caplog.text  # ...without the token


# --------------------------------------------------------------------------------------------
# the origin under benchmark-like load
# --------------------------------------------------------------------------------------------


def test_origin_with_latency_serves_200_concurrent_downloads() -> None:
    names = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "camera_gray.jpg"] * 50
    # About the origin's capacity, not speed: timeouts a busy machine cannot run into.
    policy = dataclasses.replace(
        POLICY, attempts=1, connect_timeout=30.0, read_timeout=30.0, deadline=60.0
    )

    async def run(origin: Origin) -> list[bytes]:
        async with download_client(policy) as client:
            return await asyncio.gather(
                *(download(client, origin.url(f"/img/{n}"), policy) for n in names)
            )

    with Origin(CORPUS, latency=0.15, latency_jitter=0.05) as slow_origin:
        started = time.monotonic()
        bodies = asyncio.run(run(slow_origin))
        elapsed = time.monotonic() - started
        assert len(slow_origin.requests) == 200
    assert [len(b) for b in bodies] == [(CORPUS / n).stat().st_size for n in names]
    assert elapsed >= 0.1  # latency was applied (a lower bound, not a performance claim)


def test_origin_bandwidth_limit_is_applied() -> None:
    with Origin(CORPUS, bandwidth=200_000) as throttled:  # chelsea.jpg is ~39 KB
        started = time.monotonic()
        assert fetch(throttled.url("/img/chelsea.jpg")) == CHELSEA
        assert time.monotonic() - started >= 0.15


# --------------------------------------------------------------------------------------------
# conditional requests
# --------------------------------------------------------------------------------------------


def fetch_conditional(
    urls: list[str], conditional: Validators | None, policy: DownloadPolicy = POLICY
) -> list[Fetched]:
    async def run() -> list[Fetched]:
        async with download_client(policy) as client:
            return [await fetch_url(client, url, policy, conditional=conditional) for url in urls]

    return asyncio.run(run())


def test_a_download_returns_the_validators_and_a_conditional_one_gets_304(
    origin: Origin,
) -> None:
    url = origin.url("/img/chelsea.jpg")
    (first,) = fetch_conditional([url], None)
    assert first.data == CHELSEA and not first.not_modified
    assert first.validators.etag and first.validators.last_modified
    connections = origin.connections

    again = fetch_conditional([url, url, url], first.validators)
    assert [f.not_modified for f in again] == [True, True, True]
    assert all(f.data is None and f.validators.etag == first.validators.etag for f in again)
    sent = origin.requests.headers(-1)
    assert sent["if-none-match"] == first.validators.etag
    assert sent["if-modified-since"] == first.validators.last_modified
    assert origin.not_modified.count("/img/chelsea.jpg") >= 3
    # A 304 has no body; reading its end keeps the connection for the next request.
    assert origin.connections == connections + 1


def test_a_changed_source_answers_200_to_a_conditional_request(origin: Origin) -> None:
    stale = Validators(etag='"not-the-current-one"', last_modified=None)
    (changed,) = fetch_conditional([origin.url("/img/chelsea.jpg")], stale)
    assert changed.data == CHELSEA and not changed.not_modified


def test_a_304_never_answers_an_unconditional_request(origin: Origin) -> None:
    # Only a conditional request may be answered "not modified": otherwise it is an error.
    error = failure(origin.url("/status/304"))
    assert error.code is ImageErrorCode.HTTP_ERROR


def test_conditional_requests_keep_the_address_guard(origin: Origin, listener: Listener) -> None:
    policy = dataclasses.replace(
        POLICY,
        network=NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({origin.port})),
    )
    target = quote(f"http://127.0.0.1:{listener.port}/img.jpg", safe="")
    validators = Validators(etag='"x"', last_modified=None)
    with pytest.raises(ImageFailure) as caught:
        fetch_conditional([origin.url(f"/redirect?to={target}")], validators, policy)
    assert caught.value.code is ImageErrorCode.BLOCKED_ADDRESS
    assert listener.accepted == 0
    blocked = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    with pytest.raises(ImageFailure) as direct:
        fetch_conditional(
            [origin.url("/img/chelsea.jpg")],
            validators,
            dataclasses.replace(POLICY, network=blocked),
        )
    assert direct.value.code is ImageErrorCode.BLOCKED_ADDRESS
