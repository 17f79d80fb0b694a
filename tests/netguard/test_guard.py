"""The SSRF guard's decisions: the address table, the upload-time literal check and the per-hop
URL check. The clients that enforce them, against real listeners: test_clients.py."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgbatch.core.logs import redact_url
from imgbatch.netguard import (
    BlockedAddress,
    InvalidTarget,
    NetworkPolicy,
    blocked_reason,
    check_url,
    literal_host_reason,
)

# --------------------------------------------------------------------------------------------
# blocked_reason: the address matrix
# --------------------------------------------------------------------------------------------

BLOCKED_V4 = [
    "127.0.0.1", "127.255.255.254",                      # loopback
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",  # RFC1918
    "100.64.0.1", "100.127.255.254", "100.100.100.200",  # CGNAT (and Alibaba metadata)
    "169.254.169.254", "169.254.0.1", "169.254.170.2",   # link-local, cloud metadata
    "224.0.0.1", "239.255.255.250",                      # multicast
    "240.0.0.1", "255.255.255.255",                      # reserved, broadcast
    "0.0.0.0", "0.1.2.3",                                # unspecified / "this network"
    "198.18.0.1", "198.19.255.255",                      # benchmarking
    "192.0.2.1", "198.51.100.1", "203.0.113.1",          # documentation
    "192.0.0.1", "192.0.0.192",                          # IETF protocol assignments
]  # fmt: skip

ALLOWED_V4 = [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "11.0.0.1", "172.32.0.1",
    "100.128.0.1", "198.20.0.1", "169.253.255.255", "223.255.255.254", "192.0.0.9",
]  # fmt: skip

BLOCKED_V6 = [
    "::1", "::",                                          # loopback, unspecified
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1",                                        # IPv4-compatible (deprecated)
    "::ffff:0:7f00:1",                                    # IPv4-translated (SIIT)
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::c0a8:101",  # NAT64 well-known prefix
    "64:ff9b:1::a9fe:a9fe", "64:ff9b:1::808:808",         # NAT64 local-use prefix
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::1",  # 6to4 carrying private v4
    "2001:0:7f00:1::",                                    # Teredo, server 127.0.0.1
    "2001:0:808:808::f5ff:fffe",                          # Teredo, client 10.0.0.1 (inverted)
    "fc00::1", "fd00::1", "fd00:ec2::254",                # ULA, AWS IMDS over IPv6
    "fe80::1", "fe80::1%eth0", "fec0::1",                 # link-local, site-local
    "ff02::1", "ff05::1:3",                               # multicast
    "2001:db8::1", "3fff::1",                             # documentation
    "2001:2::1",                                          # benchmarking
    "100::1", "5f00::1", "4000::1",                       # discard, SRv6, unassigned
]  # fmt: skip

ALLOWED_V6 = [
    "2606:2800::1", "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("text", BLOCKED_V4 + BLOCKED_V6)
def test_blocked_addresses_have_a_reason(text: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(text))
    assert reason, text


@pytest.mark.parametrize("text", ALLOWED_V4 + ALLOWED_V6)
def test_public_addresses_are_allowed(text: str) -> None:
    assert blocked_reason(ipaddress.ip_address(text)) is None


def test_metadata_reason_names_the_service() -> None:
    reason = blocked_reason(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))
    assert reason is not None
    assert "169.254.169.254" in reason
    assert "metadata" in reason.lower()


def test_table_does_not_trust_is_global() -> None:
    # The trap the brief warns about: Python calls these global, we must not.
    for text in ("224.0.0.1", "64:ff9b::a9fe:a9fe", "ff02::1"):
        address = ipaddress.ip_address(text)
        if address.is_global:
            assert blocked_reason(address) is not None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_embedded_ipv4_forms_agree_with_the_bare_address(number: int) -> None:
    v4 = ipaddress.IPv4Address(number)
    bare = blocked_reason(v4) is None
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | number)
    nat64 = ipaddress.IPv6Address((0x0064FF9B << 96) | number)
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (number << 80) | 1)
    for wrapped in (mapped, nat64, sixtofour):
        assert (blocked_reason(wrapped) is None) == bare, (v4, wrapped)


# --------------------------------------------------------------------------------------------
# literal_host_reason: the upload-time check (no DNS)
# --------------------------------------------------------------------------------------------

REFUSED_URLS = [
    "http://127.0.0.1/a.jpg",
    "http://2130706433/a.jpg",              # decimal
    "http://0x7f000001/a.jpg",              # hex
    "http://0177.0.0.1/a.jpg",              # octal
    "http://0177.0.0.01/a.jpg",
    "http://127.1/a.jpg",                   # short form
    "http://0x7f.1/a.jpg",
    "http://0/a.jpg",
    "http://0.0.0.0/a.jpg",
    "http://3232235777/a.jpg",              # 192.168.1.1
    "http://0x5db8d822/a.jpg",              # public but encoded: nobody writes this honestly
    "http://127.0.0.1./a.jpg",              # trailing dot
    "http://[::1]/a.jpg",
    "http://[::]/a.jpg",
    "http://[::ffff:127.0.0.1]/a.jpg",
    "http://[::ffff:7f00:1]/a.jpg",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
    "http://[fe80::1%25eth0]/a.jpg",
    "http://[fd00::1]:8080/a.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/a.jpg",
    "http://user:pw@192.168.0.1:8080/a.jpg?token=x",
    "http://localhost/a.jpg",
    "http://LOCALHOST./a.jpg",
    "http://img.localhost/a.jpg",
    "http://localhost:8000/a.jpg",
    "http://\u2460\u2461\u2466.0.0.1/a.jpg",   # circled digits
    "http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/a.jpg",  # full-width
    "http://%31%32%37.0.0.1/a.jpg",          # percent-encoded host
    "http://1.2.3.4.5/a.jpg",                # numeric, not an address: refuse, don't guess
]  # fmt: skip

ACCEPTED_URLS = [
    "http://example.com/a.jpg",
    "https://cdn.example.com:8443/a.jpg?sig=abc",
    "https://93.184.216.34/a.jpg",
    "http://[2606:2800::1]/a.jpg",
    "http://123.example.com/a.jpg",
    "http://localhost.example.com/a.jpg",
    "http://0x.example.com/a.jpg",
    "not a url",
    "",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_literal_host_reason_refuses(url: str) -> None:
    assert literal_host_reason(url), url


@pytest.mark.parametrize("url", ACCEPTED_URLS)
def test_literal_host_reason_accepts(url: str) -> None:
    assert literal_host_reason(url) is None


# URLs on either side of the plain-authority shortcut: userinfo, a backslash, brackets,
# percent-encoding, whitespace, odd ports and schemes, around hosts that are refused or not.
_PART = st.sampled_from
_URLS = st.one_of(
    st.tuples(
        _PART(["http://", "HTTPS://", "ftp://", "http:/", "http:///", " http://", ""]),
        _PART(["", "@", "user:pw@", "example.com@", "\\", "%31", "\t", "[", "a b"]),
        _PART(["127.0.0.1", "127.1", "0x7f000001", "localhost", "example.com", "[::1]",
               "10.0.0.1.", "\u2460\u2461\u2466.0.0.1", "a-b.example", ""]),
        _PART(["", ":80", ":99999", ":x", ":", "@127.0.0.1", "\\@10.0.0.1", "]"]),
        _PART(["", "/", "/a.jpg?x=@127.0.0.1", "?q", "#f", " ", "\\x"]),
    ).map("".join),
    st.lists(
        _PART(["http://", "127.0.0.1", "example.com", ".", "-", ":", ":80", "@", "\\",
               "[::1]", "%31", "/", "?", "#", " ", "1"]),
        max_size=8,
    ).map("".join),
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(_URLS)
def test_literal_host_reason_shortcut_agrees_with_urlsplit(url: str) -> None:
    # A leading space never matches the shortcut, and urlsplit's path strips it again: the
    # same URL judged the long way.
    assert literal_host_reason(url) == literal_host_reason(" " + url), url


def test_literal_host_reason_explains_encoded_forms() -> None:
    reason = literal_host_reason("http://0x7f000001/")
    assert reason is not None
    assert "127.0.0.1" in reason


# --------------------------------------------------------------------------------------------
# check_url: the per-hop check (no DNS)
# --------------------------------------------------------------------------------------------

STRICT = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset({80, 443}))
OPEN = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset())


def test_check_url_accepts_public_urls() -> None:
    assert check_url("https://example.com/a.jpg?x=1", STRICT).host == "example.com"


@pytest.mark.parametrize(
    "url",
    ["http://example.com:8080/a.jpg", "http://127.0.0.1/", "http://[::1]/", "http://0x7f000001/"],
)
def test_check_url_blocks(url: str) -> None:
    with pytest.raises(BlockedAddress):
        check_url(url, STRICT)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "/a.jpg", "http://"]
)
def test_check_url_rejects_non_http(url: str) -> None:
    with pytest.raises(InvalidTarget):
        check_url(url, STRICT)


def test_check_url_ports_apply_even_when_private_is_allowed() -> None:
    policy = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({80}))
    check_url("http://127.0.0.1/", policy)
    with pytest.raises(BlockedAddress, match="port 8080"):
        check_url("http://127.0.0.1:8080/", policy)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@example.com/a.jpg",
        "https://user@example.com/a.jpg",
        "https://:secret@example.com/a.jpg",
        "http://user:secret@127.0.0.1/a.jpg",
    ],
)
@pytest.mark.parametrize("policy", [STRICT, OPEN])
def test_check_url_refuses_credentials_and_says_why(url: str, policy: NetworkPolicy) -> None:
    # They were refused anyway, as a blocked address; now the message says what is wrong, and
    # a redirect to such a URL is refused at the hop.
    with pytest.raises(InvalidTarget) as caught:
        check_url(url, policy)
    assert str(caught.value) == (
        "URL has a user name or password in it (user:password@host); credentials are never "
        "sent, so it cannot be used"
    )


def test_blocked_message_has_no_query_or_credentials() -> None:
    with pytest.raises(BlockedAddress) as caught:
        check_url("http://127.0.0.1/a.jpg?token=hunter2#frag", STRICT)
    text = str(caught.value)
    assert "hunter2" not in text
    assert "frag" not in text
    assert (
        redact_url("https://u:p@h.example:8443/p/a.jpg?t=1#f") == "https://h.example:8443/p/a.jpg"
    )


def test_policy_from_settings() -> None:
    from imgbatch.core.settings import Settings

    policy = NetworkPolicy.from_settings(
        Settings(allow_private_networks=True, allowed_ports=[8080])
    )
    assert policy == NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({8080}))
