"""The download client (httpx over aiohttp) keeps the guard of ``guarded_client``: the same
listener checks as tests/netguard/test_guard.py, against ``pinned_client``."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgbatch.netguard import BlockedAddress, NetworkPolicy
from imgbatch.netguard.aio import pinned_client
from tests.netguard.test_guard import (
    LOOPBACK_SPELLINGS,
    OPEN,
    STRICT,
    Listener,
    _resolver_to,
    _self_signed,
)

LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8)


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    try:
        yield running
    finally:
        running.close()


async def _get(policy: NetworkPolicy, url: str, **kwargs: Any) -> httpx.Response:
    async with pinned_client(policy, timeout=httpx.Timeout(2.0), limits=LIMITS, **kwargs) as client:
        response = await client.get(url)
        await response.aread()
        return response


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_refuses_loopback_without_connecting(listener: Listener, template: str) -> None:
    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    with pytest.raises((BlockedAddress, httpx.InvalidURL)):
        asyncio.run(_get(policy, template.format(port=listener.port)))
    assert listener.accepted == 0


def test_reaches_loopback_when_private_allowed(listener: Listener) -> None:
    for url in (f"http://127.0.0.1:{listener.port}/", f"http://localhost:{listener.port}/"):
        response = asyncio.run(_get(OPEN, url))
        assert (response.status_code, response.text) == (200, "ok")
    assert listener.accepted == 2


def test_refuses_ports_not_allowed(listener: Listener) -> None:
    policy = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset({80, 443}))
    with pytest.raises(BlockedAddress, match=f"port {listener.port}"):
        asyncio.run(_get(policy, f"http://127.0.0.1:{listener.port}/"))
    assert listener.accepted == 0


def test_does_not_follow_redirects(listener: Listener) -> None:
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
        assert asyncio.run(_get(OPEN, f"http://127.0.0.1:{port}/")).status_code == 302
        assert listener.accepted == 0
    finally:
        thread.join(timeout=2)
        redirector.close()


def test_name_resolving_to_loopback_is_refused_after_one_lookup(listener: Listener) -> None:
    resolver, asked = _resolver_to("127.0.0.1")
    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    with pytest.raises(BlockedAddress, match="Loopback"):
        asyncio.run(_get(policy, f"http://images.example.com:{listener.port}/", resolver=resolver))
    assert asked == ["images.example.com"]
    assert listener.accepted == 0


def test_name_resolving_to_public_and_private_is_refused_whole(listener: Listener) -> None:
    resolver, _ = _resolver_to("93.184.216.34", "127.0.0.1")
    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    with pytest.raises(BlockedAddress, match="both permitted and denied"):
        asyncio.run(_get(policy, f"http://rebind.example.com:{listener.port}/", resolver=resolver))
    assert listener.accepted == 0


def test_our_table_decides() -> None:
    for address, reason in (
        ("64:ff9b::a9fe:a9fe", r"169\.254\.169\.254"),
        ("::ffff:0:7f00:1", "IPv4-translated"),
    ):
        resolver, _ = _resolver_to(address)
        with pytest.raises(BlockedAddress, match=reason):
            asyncio.run(_get(STRICT, "http://meta.example.com/", resolver=resolver))


def test_connection_goes_to_the_checked_address(listener: Listener) -> None:
    # One lookup, and the connection lands on its answer although the system resolver has
    # never heard of the name: nothing resolves it a second time.
    resolver, asked = _resolver_to("127.0.0.1")
    response = asyncio.run(_get(OPEN, f"http://pinned.invalid:{listener.port}/", resolver=resolver))
    assert response.status_code == 200
    assert asked == ["pinned.invalid"]
    assert listener.accepted == 1


def test_every_new_connection_is_resolved_and_checked_again(listener: Listener) -> None:
    # The answer changes between two connections (the listener closes each one): the second
    # lookup happens, and its private answer is refused, so no DNS cache outlives a check.
    answers = iter([("127.0.0.1",), ("10.0.0.1",)])
    asked: list[str] = []

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    policy = NetworkPolicy(allow_private_networks=False, allowed_ports=frozenset())
    permissive = NetworkPolicy(allow_private_networks=True, allowed_ports=frozenset())

    async def run() -> None:
        # First with private networks allowed, so that the loopback listener is reachable...
        async with pinned_client(
            permissive, timeout=httpx.Timeout(2.0), limits=LIMITS, resolver=resolve
        ) as client:
            assert (await client.get(f"http://a.example:{listener.port}/")).status_code == 200
        # ...then the same name with the guard on: resolved again, refused.
        async with pinned_client(
            policy, timeout=httpx.Timeout(2.0), limits=LIMITS, resolver=resolve
        ) as client:
            with pytest.raises(BlockedAddress):
                await client.get(f"http://a.example:{listener.port}/")

    asyncio.run(run())
    assert asked == ["a.example", "a.example"]
    assert listener.accepted == 1


def test_proxies_from_the_environment_are_ignored(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would resolve the target itself, out of reach of the pin.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9/")
    assert os.environ["HTTP_PROXY"]
    assert asyncio.run(_get(OPEN, f"http://127.0.0.1:{listener.port}/")).status_code == 200
    assert listener.accepted == 1


def test_https_keeps_sni_and_host_through_the_pin(tmp_path: Path) -> None:
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
        response = asyncio.run(
            _get(OPEN, f"https://images.test:{port}/a.jpg", verify=client_ctx, resolver=resolver)
        )
    finally:
        thread.join(timeout=5)
        raw.close()
    assert response.status_code == 200
    assert seen.get("sni") == "images.test"
    assert f"\r\nHost: images.test:{port}\r\n" in seen["request"]
