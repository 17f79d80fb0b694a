"""The SSRF guard: the address table, the upload-time literal check, and the real guarded client
against real loopback listeners (a refused target must never see a connection)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgbatch.core.logs import redact_url
from imgbatch.netguard import (
    BlockedAddress,
    InvalidTarget,
    NetworkPolicy,
    blocked_reason,
    check_url,
    guarded_client,
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


# --------------------------------------------------------------------------------------------
# The guarded client against real listeners
# --------------------------------------------------------------------------------------------


class Listener:
    """A plain TCP listener that counts accepted connections and answers ``200 ok``."""

    def __init__(self, host: str = "127.0.0.1", family: socket.AddressFamily = socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    try:
        yield running
    finally:
        running.close()


TIMEOUT = httpx.Timeout(2.0)


async def _get(policy: NetworkPolicy, url: str, **kwargs: Any) -> httpx.Response:
    async with guarded_client(policy, timeout=TIMEOUT, **kwargs) as client:
        return await client.get(url)


LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f000001:{port}/",
    "http://127.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://localhost:{port}/",
    "http://LocalHost.:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://0x7f.1:{port}/",
]


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_guarded_client_refuses_loopback_without_connecting(
    listener: Listener, template: str
) -> None:
    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    url = template.format(port=listener.port)
    # 0177.0.0.1 is refused by httpx's own URL parser before any request; either way no socket.
    with pytest.raises((BlockedAddress, httpx.InvalidURL)):
        asyncio.run(_get(policy, url))
    assert listener.accepted == 0


def test_guarded_client_reaches_loopback_when_private_allowed(listener: Listener) -> None:
    for url in (f"http://127.0.0.1:{listener.port}/", f"http://localhost:{listener.port}/"):
        response = asyncio.run(_get(OPEN, url))
        assert response.status_code == 200
        assert response.text == "ok"
    assert listener.accepted == 2


def test_guarded_client_refuses_ports_not_allowed(listener: Listener) -> None:
    policy = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({80, 443}))
    with pytest.raises(BlockedAddress, match=f"port {listener.port}"):
        asyncio.run(_get(policy, f"http://127.0.0.1:{listener.port}/"))
    assert listener.accepted == 0
    allowed = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({listener.port}))
    assert asyncio.run(_get(allowed, f"http://127.0.0.1:{listener.port}/")).status_code == 200


def test_guarded_client_does_not_follow_redirects(listener: Listener) -> None:
    redirector = socket.socket()
    redirector.bind(("127.0.0.1", 0))
    redirector.listen(1)
    port = redirector.getsockname()[1]

    def serve() -> None:
        conn, _ = redirector.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(
                f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{listener.port}/\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        response = asyncio.run(_get(OPEN, f"http://127.0.0.1:{port}/"))
        assert response.status_code == 302
        assert listener.accepted == 0
    finally:
        thread.join(timeout=2)
        redirector.close()


def _resolver_to(*addresses: str) -> tuple[Any, list[str]]:
    """A stand-in for getaddrinfo (DNS we control), recording the names it was asked for."""
    asked: list[str] = []

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        out: list[tuple[Any, ...]] = []
        for text in addresses:
            if ":" in text:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port)))
        return out

    return resolve, asked


def test_name_resolving_to_loopback_is_refused_after_one_lookup(listener: Listener) -> None:
    resolver, asked = _resolver_to("127.0.0.1")
    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    with pytest.raises(BlockedAddress, match="Loopback"):
        asyncio.run(_get(policy, f"http://images.example.com:{listener.port}/", resolver=resolver))
    assert asked == ["images.example.com"]
    assert listener.accepted == 0


def test_name_resolving_to_public_and_private_is_refused_whole(listener: Listener) -> None:
    # The rebinding signature: "use the public half" would let the attacker pick.
    resolver, _ = _resolver_to("93.184.216.34", "127.0.0.1")
    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    with pytest.raises(BlockedAddress, match="both permitted and denied"):
        asyncio.run(_get(policy, f"http://rebind.example.com:{listener.port}/", resolver=resolver))
    assert listener.accepted == 0


def test_name_resolving_to_nat64_metadata_is_refused() -> None:
    resolver, _ = _resolver_to("64:ff9b::a9fe:a9fe")
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254"):
        asyncio.run(_get(STRICT, "http://meta.example.com/", resolver=resolver))


def test_transport_uses_our_table_not_ssrfguards_default() -> None:
    # ssrfguard's own table permits the SIIT form of 127.0.0.1; ours does not, and the
    # transport must be answering from ours.
    resolver, _ = _resolver_to("::ffff:0:7f00:1")
    with pytest.raises(BlockedAddress, match="IPv4-translated"):
        asyncio.run(_get(STRICT, "http://siit.example.com/", resolver=resolver))


def test_connection_goes_to_the_checked_address(listener: Listener) -> None:
    # The name resolves once, to the listener's address, and the connection lands there even
    # though the hostname itself means nothing to the system resolver.
    resolver, asked = _resolver_to("127.0.0.1")
    response = asyncio.run(_get(OPEN, f"http://pinned.invalid:{listener.port}/", resolver=resolver))
    assert response.status_code == 200
    assert asked == ["pinned.invalid"]
    assert listener.accepted == 1


# --------------------------------------------------------------------------------------------
# TLS through the pin: SNI, certificate verification against the name, and Host stay correct
# --------------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "images.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        # Only the name: if the client verified against the pinned IP, the handshake would fail.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("images.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_keeps_sni_and_host_through_the_pin(tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    seen: dict[str, Any] = {}

    def on_sni(_sock: Any, server_name: str | None, _ctx: Any) -> None:
        seen["sni"] = server_name

    server_ctx.sni_callback = on_sni
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen(1)
    port = raw.getsockname()[1]

    def serve() -> None:
        conn, _ = raw.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(4096)
                seen["request"] = data.decode()
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError) as failed:
            seen["error"] = failed

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    resolver, _ = _resolver_to("127.0.0.1")
    try:
        response = asyncio.run(
            _get(OPEN, f"https://images.test:{port}/a.jpg", verify=client_ctx, resolver=resolver)
        )
    finally:
        thread.join(timeout=5)
        raw.close()
    assert response.status_code == 200
    assert seen.get("sni") == "images.test"
    assert f"\r\nHost: images.test:{port}\r\n" in seen["request"]
