"""Policy and the per-hop check: everything about a URL that is decided without DNS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from imgbatch.core.logs import redact_url, scrub_message
from imgbatch.netguard.addresses import literal_host_reason

if TYPE_CHECKING:
    from imgbatch.core.settings import Settings

ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
        InvalidTarget: not an absolute http(s) URL with a host, or one with credentials in it.
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
    if parsed.userinfo:
        # We never send credentials (they would go to whatever host a redirect names), so such
        # a URL can only fail; say so instead of letting the transport call it a blocked address.
        raise InvalidTarget(
            "URL has a user name or password in it (user:password@host); credentials are never "
            "sent, so it cannot be used"
        )
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
