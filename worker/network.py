"""Where imgbatch is allowed to connect: the SSRF guard and the guarded httpx client.

Every URL a user writes into a spreadsheet is fetched by a worker that sits inside our network,
so "download this" is "make our server connect wherever the spreadsheet says". This module is
the one place that decides where that may be. Image downloads use it, and so will webhook
delivery.

Three layers, each useful on its own:

* :func:`literal_host_reason`: the upload-time check. No DNS, so it can only refuse URLs whose
  host *is* an address (in any encoding) or a loopback name, which is enough to reject the
  obvious attacks while the user is still looking at the upload form.
* :func:`check_url`: the per-hop check a redirect-following caller runs before each request:
  scheme, port, and literal addresses. Also no DNS.
* :func:`guarded_client`: the enforcement. Its transport resolves each host **once**, checks
  **every** answer with :func:`blocked_reason`, connects to one of the checked addresses (so a
  DNS record that changes between check and connect changes nothing), and lets httpcore start
  TLS with the URL's hostname, so SNI, certificate verification and ``Host`` stay correct. It
  never follows redirects; callers follow them by hand so each hop goes through it again.

Why the transport is ``ssrfguard`` and not ours
-----------------------------------------------
We evaluated ``ssrfguard`` 0.4.1 (``ssrfguard.httpx.AsyncSafeTransport``) against writing an
``httpcore.AsyncNetworkBackend`` ourselves, and kept ssrfguard because the tests in
``tests/worker/test_network.py`` pass with it (once given our table, below) and its design is
what we would have written, with fewer places to get it wrong:

* It pins at httpcore's network-backend seam: ``connect_tcp`` resolves once (in a worker thread,
  with its own limiter, so a stalled ``getaddrinfo`` cannot freeze the event loop), checks every
  answer, refuses a name that resolves to both permitted and denied addresses (the rebinding
  signature), connects by IP and re-checks the peer address of the connected socket. TLS is then
  started by httpcore's own stream code with the origin hostname: there is no ``server_hostname``
  line anywhere for us to get wrong. ``test_https_keeps_sni_and_host_through_the_pin`` proves SNI,
  certificate verification against the name and ``Host`` through a real TLS loopback server.
* Probed before deciding: its URL check refuses ``127.0.0.1``, ``2130706433``, ``127.1``,
  ``[::ffff:127.0.0.1]`` and ``[64:ff9b::7f00:1]`` before any socket exists, and spellings it
  takes for names (``0x7f000001``, ``0x7f.1``, ``localhost``) resolve to 127.0.0.1 and are refused
  at the address check. The listener tests in ``test_network.py`` assert zero connections for
  each spelling, and the resolver-injection tests show one lookup per request and the
  connection landing on the checked address.
* Writing our own meant re-implementing a backend, the failover across answers and peer
  verification, i.e. the same code plus a hand-written TLS path: more risk, no gain.

What the tests showed it gets wrong, and how that is handled here: its default address table
**permits** ``::ffff:0:7f00:1`` (the SIIT "IPv4-translated" form of 127.0.0.1) and anything else
outside IPv6 global unicast that IANA's special-purpose registry happens not to list. So the
transport is not given ssrfguard's table but :data:`ADDRESS_TABLE`, which is ssrfguard's IANA
transcription plus our explicit additions below; :func:`blocked_reason` answers from the same
table, so the upload-time check and the connect-time check cannot disagree. Our transport also
runs :func:`literal_host_reason` before ssrfguard, so encoded spellings and ``localhost.`` are
refused identically whatever the platform resolver makes of them (``localhost.`` does not even
resolve in some containers, which would surface as a connect error rather than a refusal), and
without sending a DNS query. ssrfguard's exceptions are translated into our single
:class:`BlockedAddress` at the transport boundary, so callers never import ssrfguard.

Known limit (not ours to fix here): name resolution uses the platform ``getaddrinfo``, which has
no timeout. The caller's deadline (``asyncio.timeout``) still fires on time; the resolver thread
is simply left to finish in the background.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx
from ssrfguard import DEFAULT_DENIED, AddressTable, Block, Policy, Reach, Resolver, SSRFGuardError
from ssrfguard.errors import BlockedAddressError, BlockedURLError
from ssrfguard.httpx import AsyncSafeTransport

if TYPE_CHECKING:
    from models.settings import Settings

__all__ = [
    "ADDRESS_TABLE",
    "BlockedAddress",
    "InvalidTarget",
    "NetworkPolicy",
    "blocked_reason",
    "check_url",
    "guarded_client",
    "literal_host_reason",
    "redact_url",
    "scrub_message",
]

IPAddress = IPv4Address | IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALL_PORTS = frozenset(range(1, 65536))


# --------------------------------------------------------------------------------------------
# The address table
# --------------------------------------------------------------------------------------------


def _deny(cidr: str, name: str, rfc: str) -> Block:
    return Block(network=ip_network(cidr), name=name, rfc=rfc, reach=Reach.DENIED)


#: Our additions to ssrfguard's IANA-derived table. Lookup is longest-prefix, so these broad
#: IPv6 blocks only decide addresses no more specific row claims: ``::ffff:0:0/96`` (mapped),
#: ``::/96`` (compatible), ``64:ff9b::/96`` (NAT64) are still *decoded* and judged by the IPv4
#: address they carry, and ``fc00::/7``, ``fe80::/10``, ``ff00::/8`` keep their own names.
_IMGBATCH_BLOCKS: tuple[Block, ...] = (
    # SIIT IPv4-translated addresses carry an IPv4 destination like the mapped form does, but
    # ssrfguard neither decodes nor denies them: ::ffff:0:7f00:1 would be permitted.
    _deny("::ffff:0:0:0/96", "IPv4-translated Address", "RFC2765, RFC6145"),
    # Everything outside 2000::/3 is either special-purpose (listed above with a better name) or
    # unassigned IETF-reserved space. Nothing an image host uses lives there, so refuse it all
    # rather than trusting the registry to list every special case.
    _deny("::/3", "Reserved by IETF (outside global unicast 2000::/3)", "RFC4291"),
    _deny("4000::/2", "Reserved by IETF (outside global unicast 2000::/3)", "RFC4291"),
    _deny("8000::/1", "Reserved by IETF (outside global unicast 2000::/3)", "RFC4291"),
)

#: The one table both :func:`blocked_reason` and the guarded transport consult.
ADDRESS_TABLE = AddressTable((*DEFAULT_DENIED.blocks, *_IMGBATCH_BLOCKS))

#: What the transport uses when private networks are allowed (tests, ``make demo``): no address
#: is refused, but schemes, ports and URL shape still are.
_NOTHING_DENIED = AddressTable(())


def blocked_reason(ip: IPv4Address | IPv6Address) -> str | None:
    """Why a fetcher must not connect to ``ip``, or ``None`` if it may.

    Answers from :data:`ADDRESS_TABLE`, never from ``ipaddress``'s ``is_global``/``is_private``
    (which call 224.0.0.1 and ``64:ff9b::a9fe:a9fe``, the metadata service behind NAT64, global).
    IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged
    by the address they carry.
    """
    verdict = ADDRESS_TABLE.classify(ip)
    return verdict.reason if verdict.blocked else None


# --------------------------------------------------------------------------------------------
# Errors and URL helpers
# --------------------------------------------------------------------------------------------


class BlockedAddress(Exception):
    """A URL, host, port or resolved address that imgbatch refuses to connect to.

    ``reason`` says which rule refused it. ``url`` is the target with userinfo, query and
    fragment removed (they can carry tokens), so the message is safe to show and to log.
    """

    def __init__(self, reason: str, *, url: str | None = None) -> None:
        self.reason = reason
        self.url = url
        super().__init__(f"{url}: {reason}" if url else reason)


class InvalidTarget(ValueError):
    """A URL that is not a fetchable http(s) URL at all (bad syntax, other scheme, no host)."""


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without userinfo, query or fragment, for messages and logs."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"


_URL_TAIL = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")


def scrub_message(text: str) -> str:
    """Remove query strings and fragments from any URL embedded in free text."""
    return _URL_TAIL.sub(r"\1", text)


class _RedactURLs(logging.Filter):
    """httpx logs every request at INFO with its full URL, query string (tokens) included.

    A filter on the ``httpx`` logger rewrites those arguments to the redacted form, so turning on
    INFO logging for debugging cannot leak signed-URL tokens into log storage.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _RedactURLs) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_RedactURLs())


# --------------------------------------------------------------------------------------------
# Upload-time check: is the host an address (in any spelling) or a loopback name?
# --------------------------------------------------------------------------------------------

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Dots IDNA treats as label separators, which NFKC does not fold into ".".
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# One label of an inet_aton()-style number: decimal, octal (leading 0) or hex (0x).
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


def _inet_aton(host: str) -> IPv4Address | None:
    """Decode the legacy spellings glibc's ``inet_aton`` (and so ``getaddrinfo``) accepts.

    ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1`` and ``0x7f.1`` all mean 127.0.0.1
    to the resolver although ``ipaddress`` rejects every one of them.
    """
    labels = host.split(".")
    if not 1 <= len(labels) <= 4:
        return None
    values: list[int] = []
    for label in labels:
        if label.startswith("0x"):
            digits, base = label[2:], 16
        elif len(label) > 1 and label.startswith("0"):
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        try:
            values.append(int(digits, base) if digits else 0)
        except ValueError:
            return None
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return IPv4Address(number)


def _normalise_host(host: str) -> str:
    """The host roughly as the resolver will see it: percent-decoded, folded, no trailing dot."""
    host = unquote(host)
    # NFKC turns circled and full-width digits into ASCII ("①②⑦" -> "127"), which is what the
    # IDNA codec does before a name reaches getaddrinfo.
    host = unicodedata.normalize("NFKC", host).translate(_IDNA_DOTS).lower()
    return host.rstrip(".")


def literal_host_reason(url: str) -> str | None:
    """Why ``url``'s host is refused at upload time, or ``None``. Never resolves anything.

    Refused: IP literals in a blocked range (any spelling, bracketed IPv6 included), every
    non-canonical IPv4 spelling even if public (``2130706433``, ``0x7f000001``, octal, ``127.1``:
    parsers disagree about them and nobody writes them by accident), and loopback names
    (``localhost``, ``*.localhost``). A public address in canonical form, or any ordinary
    hostname, returns ``None``; hostnames are checked after DNS, by the guarded client.
    """
    try:
        raw = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return _host_reason(raw) if raw else None


# A sheet repeats a handful of supplier hosts across 100k rows: judge each host once.
@lru_cache(maxsize=4096)
def _host_reason(raw: str) -> str | None:
    host = _normalise_host(raw)
    if not host:
        return None
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return f"host {host!r} is a loopback name"
    if ":" in host:
        # Only an IPv6 literal can contain a colon once the port is split off.
        try:
            address: IPAddress = ipaddress.ip_address(host)
        except ValueError:
            return f"host {host!r} is a malformed IPv6 address"
        reason = blocked_reason(address)
        return f"address {address} is not allowed: {reason}" if reason else None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        reason = blocked_reason(address)
        return f"address {address} is not allowed: {reason}" if reason else None
    if all(_NUMERIC_LABEL.match(label) for label in host.split(".")):
        decoded = _inet_aton(host)
        if decoded is None:
            return f"host {host!r} is numeric but not a valid address"
        reason = blocked_reason(decoded)
        why = f"; {reason}" if reason else f"; write it as {decoded}"
        return f"host {host!r} is an encoded IPv4 address ({decoded}){why}"
    return None


# --------------------------------------------------------------------------------------------
# Policy and the per-hop check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkPolicy:
    """Where fetches may go.

    ``allow_private_networks`` switches off the address check (tests and ``make demo`` fetch
    from a loopback origin); ports and schemes are still enforced. An empty ``allowed_ports``
    means any port.
    """

    allow_private_networks: bool = False
    allowed_ports: frozenset[int] = frozenset({80, 443})

    @classmethod
    def from_settings(cls, settings: Settings) -> NetworkPolicy:
        return cls(
            allow_private_networks=settings.allow_private_networks,
            allowed_ports=frozenset(settings.allowed_ports),
        )

    def port_allowed(self, port: int) -> bool:
        return not self.allowed_ports or port in self.allowed_ports


def check_url(url: str | httpx.URL, policy: NetworkPolicy) -> httpx.URL:
    """Everything about one hop that can be decided without DNS; returns the parsed URL.

    Run before every request, redirect hops included. The guarded client repeats these checks
    and adds the resolved-address check, so this is an early, cheap refusal rather than the
    enforcement; it exists so that a redirect to a forbidden place is refused before we even
    hand it to the client.

    Raises:
        InvalidTarget: not an absolute http(s) URL with a host.
        BlockedAddress: port not allowed, or the host is a blocked/encoded address or a
            loopback name (unless private networks are allowed).
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL as bad:
        raise InvalidTarget(f"invalid URL: {scrub_message(str(bad))}") from bad
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise InvalidTarget(
            f"unsupported URL scheme {parsed.scheme!r}" if parsed.scheme else "URL has no scheme"
        )
    if not parsed.host:
        raise InvalidTarget("URL has no host")
    safe = redact_url(parsed)
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    if not policy.port_allowed(port):
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise BlockedAddress(f"port {port} is not in allowed_ports ({allowed})", url=safe)
    if not policy.allow_private_networks:
        reason = literal_host_reason(str(parsed))
        if reason is not None:
            raise BlockedAddress(reason, url=safe)
    return parsed


# --------------------------------------------------------------------------------------------
# The guarded client
# --------------------------------------------------------------------------------------------


def _ssrfguard_policy(policy: NetworkPolicy) -> Policy:
    return Policy(
        denied_networks=_NOTHING_DENIED if policy.allow_private_networks else ADDRESS_TABLE,
        allowed_ports=policy.allowed_ports or _ALL_PORTS,
        # A name resolving to both public and private addresses is refused whole: that is what
        # a rebinding attack looks like, and "use the public half" lets the attacker choose.
        on_partial_block="reject",
    )


def _reason_of(refused: SSRFGuardError) -> str:
    # ssrfguard's str() quotes the full URL (query included); its ``reason`` never does.
    if isinstance(refused, BlockedAddressError):
        return f"{refused.address}: {refused.reason}"
    if isinstance(refused, BlockedURLError):
        return refused.reason
    return scrub_message(str(refused))


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
            reason = literal_host_reason(str(request.url))
            if reason is not None:
                raise BlockedAddress(reason, url=redact_url(request.url))
        try:
            return await super().handle_async_request(request)
        except SSRFGuardError as refused:
            raise BlockedAddress(_reason_of(refused), url=redact_url(request.url)) from None


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
        policy=_ssrfguard_policy(policy),
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


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` (delta-seconds or HTTP-date) as seconds from now, or None.

    Shared by image downloads and webhook deliveries, which both honour it.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
