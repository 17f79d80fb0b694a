"""The guarded client: resolve once, check every answer, connect to the checked address."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx
from ssrfguard import Policy, Resolver, SSRFGuardError
from ssrfguard.errors import BlockedAddressError, BlockedURLError
from ssrfguard.httpx import AsyncSafeTransport

from imgbatch.core.logs import redact_url, scrub_message
from imgbatch.netguard.addresses import ADDRESS_TABLE, NOTHING_DENIED, literal_host_reason
from imgbatch.netguard.policy import BlockedAddress, NetworkPolicy

_ALL_PORTS = frozenset(range(1, 65536))


def ssrfguard_policy(policy: NetworkPolicy) -> Policy:
    return Policy(
        denied_networks=NOTHING_DENIED if policy.allow_private_networks else ADDRESS_TABLE,
        allowed_ports=policy.allowed_ports or _ALL_PORTS,
        # A name resolving to both public and private addresses is refused whole: that is what
        # a rebinding attack looks like, and "use the public half" lets the attacker choose.
        on_partial_block="reject",
    )


def reason_of(refused: SSRFGuardError) -> str:
    # ssrfguard's str() quotes the full URL (query included); its ``reason`` never does.
    if isinstance(refused, BlockedAddressError):
        return f"{refused.address}: {refused.reason}"
    if isinstance(refused, BlockedURLError):
        return refused.reason
    return scrub_message(str(refused))


def refuse_literal_host(url: str, *, shown: str) -> None:
    """Our literal-host check (encoded spellings, loopback names) as a refusal: raises
    :class:`BlockedAddress` naming ``shown`` (the URL as it may be logged)."""
    reason = literal_host_reason(url)
    if reason is not None:
        raise BlockedAddress(reason, url=shown)


class _GuardedTransport(AsyncSafeTransport):
    """ssrfguard's pinning transport, raising our :class:`BlockedAddress` instead of its errors.

    Translation happens here, at the transport, because that is the one place every refusal
    (URL shape, port, each resolved address, the connected peer) passes through.
    """

    def __init__(self, *, refuse_literals: bool, **options: Any) -> None:
        super().__init__(**options)
        self._refuse_literals = refuse_literals

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._refuse_literals:
            # Our literal check first: it knows spellings ssrfguard would hand to the resolver
            # (``0x7f000001``, ``localhost.``), so those are refused the same way whatever the
            # platform resolver makes of them, and without a DNS query leaving the host.
            refuse_literal_host(str(request.url), shown=redact_url(request.url))
        try:
            return await super().handle_async_request(request)
        except SSRFGuardError as refused:
            raise BlockedAddress(reason_of(refused), url=redact_url(request.url)) from None


def guarded_client(
    policy: NetworkPolicy,
    *,
    timeout: httpx.Timeout,
    headers: Mapping[str, str] | None = None,
    limits: httpx.Limits | None = None,
    verify: ssl.SSLContext | bool = True,
    resolver: Resolver | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that can only connect where ``policy`` allows.

    Never follows redirects: callers follow ``Location`` by hand, through :func:`check_url` and
    this client again, so every hop is checked. Refusals raise :class:`BlockedAddress` from
    ``send``/``get``. Build one per process and reuse it (it pools connections).

    ``trust_env=False`` because environment proxies would resolve the target themselves, out of
    reach of the pin, and ``.netrc`` credentials must never be sent to user-chosen hosts.
    ``resolver`` replaces ``socket.getaddrinfo`` (tests use it to simulate DNS answers); whatever
    it returns is still checked.
    """
    transport = _GuardedTransport(
        refuse_literals=not policy.allow_private_networks,
        policy=ssrfguard_policy(policy),
        resolver=resolver,
        verify=verify,
        limits=limits,
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        headers=headers,
        follow_redirects=False,
        trust_env=False,
    )
