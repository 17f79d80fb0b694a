"""Both guarded HTTP clients against real loopback listeners: a refused target must never see a
connection. Every test here runs once per client, by construction (the ``guarded`` fixture):
webhook deliveries' (httpx, ``guarded_client``) and image downloads' (httpx's API over
aiohttp, ``pinned_client``). A guard test added here covers both."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgbatch.netguard import BlockedAddress, NetworkPolicy, guarded_client
from imgbatch.netguard.aio import pinned_client
from tests.support.listeners import Listener

STRICT = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset({80, 443}))
OPEN = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset())
PRIVATE_REFUSED = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
TIMEOUT = httpx.Timeout(2.0)
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8)

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@dataclass(frozen=True)
class Guarded:
    """One of the two clients: ``open(policy, **kwargs)`` builds it as its caller does."""

    open: ClientFactory

    async def get(self, policy: NetworkPolicy, url: str, **kwargs: Any) -> httpx.Response:
        async with self.open(policy, **kwargs) as client:
            response = await client.get(url)
            await response.aread()
            return response

    def run_get(self, policy: NetworkPolicy, url: str, **kwargs: Any) -> httpx.Response:
        return asyncio.run(self.get(policy, url, **kwargs))


@asynccontextmanager
async def _webhooks(policy: NetworkPolicy, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(policy, timeout=TIMEOUT, **kwargs) as client:
        yield client


@asynccontextmanager
async def _downloads(policy: NetworkPolicy, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with pinned_client(policy, timeout=TIMEOUT, limits=LIMITS, **kwargs) as client:
        yield client


@pytest.fixture(params=[_webhooks, _downloads], ids=["webhooks-httpx", "downloads-aiohttp"])
def guarded(request: pytest.FixtureRequest) -> Guarded:
    return Guarded(request.param)


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
def test_refuses_loopback_without_connecting(
    guarded: Guarded, listener: Listener, template: str
) -> None:
    url = template.format(port=listener.port)
    # 0177.0.0.1 is refused by httpx's own URL parser before any request; either way no socket.
    with pytest.raises((BlockedAddress, httpx.InvalidURL)):
        guarded.run_get(PRIVATE_REFUSED, url)
    assert listener.accepted == 0


def test_reaches_loopback_when_private_allowed(guarded: Guarded, listener: Listener) -> None:
    for url in (f"http://127.0.0.1:{listener.port}/", f"http://localhost:{listener.port}/"):
        response = guarded.run_get(OPEN, url)
        assert (response.status_code, response.text) == (200, "ok")
    assert listener.accepted == 2


def test_refuses_ports_not_allowed_and_an_allowed_port_then_succeeds(
    guarded: Guarded, listener: Listener
) -> None:
    policy = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({80, 443}))
    with pytest.raises(BlockedAddress, match=f"port {listener.port}"):
        guarded.run_get(policy, f"http://127.0.0.1:{listener.port}/")
    assert listener.accepted == 0
    allowed = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({listener.port}))
    assert guarded.run_get(allowed, f"http://127.0.0.1:{listener.port}/").status_code == 200
    assert listener.accepted == 1


def test_does_not_follow_redirects(guarded: Guarded, listener: Listener) -> None:
    redirector = socket.create_server(("127.0.0.1", 0))
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
        assert guarded.run_get(OPEN, f"http://127.0.0.1:{port}/").status_code == 302
        assert listener.accepted == 0
    finally:
        thread.join(timeout=2)
        redirector.close()


def test_name_resolving_to_loopback_is_refused_after_one_lookup(
    guarded: Guarded, listener: Listener
) -> None:
    resolver, asked = _resolver_to("127.0.0.1")
    with pytest.raises(BlockedAddress, match="Loopback"):
        guarded.run_get(
            PRIVATE_REFUSED, f"http://images.example.com:{listener.port}/", resolver=resolver
        )
    assert asked == ["images.example.com"]
    assert listener.accepted == 0


def test_name_resolving_to_public_and_private_is_refused_whole(
    guarded: Guarded, listener: Listener
) -> None:
    # The rebinding signature: "use the public half" would let the attacker pick.
    resolver, _ = _resolver_to("93.184.216.34", "127.0.0.1")
    with pytest.raises(BlockedAddress, match="both permitted and denied"):
        guarded.run_get(
            PRIVATE_REFUSED, f"http://rebind.example.com:{listener.port}/", resolver=resolver
        )
    assert listener.accepted == 0


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("64:ff9b::a9fe:a9fe", r"169\.254\.169\.254"),  # NAT64 of the metadata address
        # ssrfguard's own table permits the SIIT form of 127.0.0.1; ours does not, and the
        # transport must be answering from ours.
        ("::ffff:0:7f00:1", "IPv4-translated"),
    ],
    ids=["nat64-metadata", "siit-loopback"],
)
def test_our_address_table_decides(guarded: Guarded, address: str, reason: str) -> None:
    resolver, _ = _resolver_to(address)
    with pytest.raises(BlockedAddress, match=reason):
        guarded.run_get(STRICT, "http://meta.example.com/", resolver=resolver)


def test_connection_goes_to_the_checked_address(guarded: Guarded, listener: Listener) -> None:
    # One lookup, and the connection lands on its answer although the system resolver has
    # never heard of the name: nothing resolves it a second time.
    resolver, asked = _resolver_to("127.0.0.1")
    response = guarded.run_get(OPEN, f"http://pinned.invalid:{listener.port}/", resolver=resolver)
    assert response.status_code == 200
    assert asked == ["pinned.invalid"]
    assert listener.accepted == 1


def test_every_new_connection_is_resolved_and_checked_again(
    guarded: Guarded, listener: Listener
) -> None:
    # The answer changes between two connections: the second lookup happens, and its private
    # answer is refused, so no DNS cache outlives a check.
    answers = iter([("127.0.0.1",), ("10.0.0.1",)])
    asked: list[str] = []

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    async def run() -> None:
        # First with private networks allowed, so that the loopback listener is reachable...
        async with guarded.open(OPEN, resolver=resolve) as client:
            assert (await client.get(f"http://a.example:{listener.port}/")).status_code == 200
        # ...then the same name with the guard on: resolved again, refused.
        async with guarded.open(PRIVATE_REFUSED, resolver=resolve) as client:
            with pytest.raises(BlockedAddress):
                await client.get(f"http://a.example:{listener.port}/")

    asyncio.run(run())
    assert asked == ["a.example", "a.example"]
    assert listener.accepted == 1


def test_proxies_from_the_environment_are_ignored(
    guarded: Guarded, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would resolve the target itself, out of reach of the pin.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9/")
    assert os.environ["HTTP_PROXY"]
    assert guarded.run_get(OPEN, f"http://127.0.0.1:{listener.port}/").status_code == 200
    assert listener.accepted == 1


# --------------------------------------------------------------------------------------------
# TLS through the pin: SNI, certificate verification against the name, and Host stay correct
# --------------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
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


def test_https_keeps_sni_and_host_through_the_pin(guarded: Guarded, tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    seen: dict[str, Any] = {}

    def on_sni(_sock: Any, server_name: str | None, _ctx: Any) -> None:
        seen["sni"] = server_name

    server_ctx.sni_callback = on_sni
    raw = socket.create_server(("127.0.0.1", 0))
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
        response = guarded.run_get(
            OPEN, f"https://images.test:{port}/a.jpg", verify=client_ctx, resolver=resolver
        )
    finally:
        thread.join(timeout=5)
        raw.close()
    assert response.status_code == 200
    assert seen.get("sni") == "images.test"
    assert f"\r\nHost: images.test:{port}\r\n" in seen["request"]
