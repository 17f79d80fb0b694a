"""The address table and the no-DNS host check (see the package docstring for why)."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_network
from urllib.parse import unquote, urlsplit

from ssrfguard import DEFAULT_DENIED, AddressTable, Block, Reach

IPAddress = IPv4Address | IPv6Address


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
NOTHING_DENIED = AddressTable(())


def blocked_reason(ip: IPv4Address | IPv6Address) -> str | None:
    """Why a fetcher must not connect to ``ip``, or ``None`` if it may.

    Answers from :data:`ADDRESS_TABLE`, never from ``ipaddress``'s ``is_global``/``is_private``
    (which call 224.0.0.1 and ``64:ff9b::a9fe:a9fe``, the metadata service behind NAT64, global).
    IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged
    by the address they carry.
    """
    verdict = ADDRESS_TABLE.classify(ip)
    return verdict.reason if verdict.blocked else None


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
    plain = _PLAIN_AUTHORITY.match(url)
    if plain is not None:
        raw: str | None = plain["host"]
    else:
        try:
            raw = urlsplit(url.strip()).hostname
        except ValueError:
            return None
    return _host_reason(raw) if raw else None


# The authority nearly every sheet URL has: http(s), a host of letters, digits, dots and
# hyphens, an optional port, then the path, query, fragment or the end. For these the host is
# what urlsplit's ``hostname`` would give (no userinfo, brackets or whitespace to interpret),
# without its ~4 us per URL: that was half of a 100k-row sheet's parse (bench/README, round
# six). Anything else (a "@", "\\", IPv6, a space...) takes urlsplit.
_PLAIN_AUTHORITY = re.compile(r"(?i:https?)://(?P<host>[A-Za-z0-9.-]+)(?::[0-9]*)?(?=[/?#]|\Z)")


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
