"""The guarded client for bulk downloads: httpx's API over aiohttp's connection pool and parser.

Why a second transport: an image download through httpx + httpcore cost ~3.1 ms of CPU on the
bench's photo mix against ~1.1 ms through aiohttp (bench/README.md, "Download clients"). The
difference is per chunk of body: httpcore's pure-Python h11 parser, anyio's cancel scopes and
the pool's bookkeeping run for every ~30 KB read, where aiohttp's parser is C. Callers keep
httpx's client (its requests, responses, streaming, exceptions and request log), so the
download code and its tests are the same; only what moves bytes changed.

The address guard is the same as :func:`netguard.guarded_client`'s, in the same places:

* **Per request, before anything connects**: ssrfguard's URL check (scheme, port, literal
  addresses) and our literal-host check (encoded spellings, loopback names), as
  ``netguard.client._GuardedTransport`` runs them.
* **At connect time**: aiohttp asks :class:`PinnedResolver` for the addresses of a name, and
  connects only to what it returns. The resolver does one lookup with ssrfguard's
  :func:`ssrfguard.resolve` (every answer checked against our table; a name with both allowed
  and denied answers is refused whole) and returns the checked addresses as numeric hosts,
  so nothing resolves the name again between the check and the connect. TLS still verifies
  the URL's hostname (aiohttp passes it as ``server_hostname``). aiohttp never asks a resolver
  about an IP literal; those were checked per request above.
* **No redirects** (``allow_redirects=False``): callers follow them by hand, each hop through
  this client again. **No proxies** and no ``.netrc``: ``trust_env=False``, as httpx's.
* **No decompression** here: the caller bounds a compressed body's decoded size itself.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from ssrfguard import Resolver, SSRFGuardError, Target, resolve

from imgbatch.core.logs import redact_url
from imgbatch.netguard.client import reason_of, refuse_literal_host, ssrfguard_policy
from imgbatch.netguard.policy import BlockedAddress, NetworkPolicy

__all__ = ["PinnedResolver", "pinned_client"]

# aiohttp hands a body on in pieces of at most this many bytes. Its default (64 KB) split a
# 1.6 MB photo into ~25 pieces, each a trip through the caller's Python code.
_READ_BUFFER = 256 * 1024
_HOP_HEADERS = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding"})


class PinnedResolver(AbstractResolver):
    """Resolves a name once, checks every answer, and returns only checked numeric addresses."""

    def __init__(self, policy: NetworkPolicy, resolver: Resolver | None = None) -> None:
        self._policy = ssrfguard_policy(policy)
        self._resolver = resolver
        self._refuse_literals = not policy.allow_private_networks

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._refuse_literals:
            refuse_literal_host(f"http://{host}/", shown=host)
        target = Target(scheme="http", host=host, port=port, host_as_written=host)
        try:
            # getaddrinfo blocks and has no timeout: in a thread, under the caller's deadline.
            addresses = await asyncio.to_thread(
                resolve, target, policy=self._policy, resolver=self._resolver
            )
        except SSRFGuardError as refused:
            raise BlockedAddress(reason_of(refused), url=host) from None
        return [
            ResolveResult(
                hostname=host,
                host=str(address.ip),
                port=address.port,
                family=address.family,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class _Body(httpx.AsyncByteStream):
    """aiohttp's body as httpx's stream; closing it early drops the connection."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as failed:
            raise _translated(failed) from None

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to its end: the connection is kept
        else:
            # Never drain a body nobody wants (a refused or redirect response, a body over the
            # cap): close the connection instead.
            self._response.close()


def _translated(failed: BaseException) -> httpx.TransportError:
    """aiohttp's errors as the httpx errors callers already sort into retryable or final."""
    detail = str(failed) or type(failed).__name__
    if isinstance(failed, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(detail)
    if isinstance(failed, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(detail)
    if isinstance(failed, aiohttp.ClientConnectorError):
        return httpx.ConnectError(detail)
    if isinstance(failed, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(detail)
    return httpx.ReadError(detail)


class _PinnedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        policy: NetworkPolicy,
        *,
        limits: httpx.Limits,
        verify: ssl.SSLContext | bool,
        resolver: Resolver | None,
    ) -> None:
        self._policy = ssrfguard_policy(policy)
        self._refuse_literals = not policy.allow_private_networks
        self._limits = limits
        self._verify = verify
        self._resolver = PinnedResolver(policy, resolver)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop: aiohttp binds its pool to it.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                use_dns_cache=False,  # every new connection is resolved and checked again
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                ssl=self._verify,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=False,
                read_bufsize=_READ_BUFFER,
                # Only what the request carries: aiohttp adds nothing of its own but Host.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        try:
            self._policy.check_url(url)
        except SSRFGuardError as refused:
            raise BlockedAddress(reason_of(refused), url=redact_url(request.url)) from None
        if self._refuse_literals:
            refuse_literal_host(url, shown=redact_url(request.url))
        timeout = request.extensions.get("timeout", {})
        session = self._open()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _HOP_HEADERS
        ]
        try:
            response = await session.request(
                request.method,
                url,
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=_plus(timeout.get("pool"), timeout.get("connect")),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except aiohttp.ClientError as failed:
            raise _translated(failed) from None
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": _reason(response)},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _NoCookies(http.cookiejar.CookieJar):
    """Nothing is kept from one response for the next request: a download never sends cookies
    (a hostile origin's would be replayed to wherever a redirect goes), and skipping the jar
    saves httpx's cookie parsing per response."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


def _plus(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else first + second


def _reason(response: aiohttp.ClientResponse) -> bytes:
    return (response.reason or "").encode("latin-1", "replace")


def pinned_client(
    policy: NetworkPolicy,
    *,
    timeout: httpx.Timeout,
    headers: Mapping[str, str] | None = None,
    limits: httpx.Limits,
    verify: ssl.SSLContext | bool = True,
    resolver: Resolver | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that can only connect where ``policy`` allows, moving bytes
    with aiohttp. The same guarantees as :func:`netguard.guarded_client` (see the module
    docstring); ``resolver`` replaces ``socket.getaddrinfo`` for tests."""
    transport = _PinnedTransport(policy, limits=limits, verify=verify, resolver=resolver)
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        headers=headers,
        follow_redirects=False,
        trust_env=False,
        cookies=_NoCookies(),
    )
