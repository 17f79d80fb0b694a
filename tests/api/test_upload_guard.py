"""The upload guards, in front of the form parser: no valid key is a 401 before the body is read
(the size cap's 413 is tested with the other limits in test_auth.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from imgbatch.cli.stack import Stack
from tests.support.stacks import redis_db, side_api

MB = 1024 * 1024


@pytest.fixture(scope="module")
def locked_url(stack: Stack) -> Iterator[str]:
    """An API with keys required and the default 50 MB upload cap."""
    env = {"IMGBATCH_AUTH_DISABLED": "false", "IMGBATCH_REDIS_URL": redis_db(stack, 8)}
    with side_api(stack, "api-locked", env) as url:
        yield url


@pytest.mark.parametrize("path", ["/api/upload", "/api/images"])
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer ibk_not-a-real-key"}], ids=["no-key", "bad-key"]
)
def test_an_unauthenticated_50mb_upload_gets_401_before_the_server_reads_1mb(
    locked_url: str, headers: dict[str, str], path: str
) -> None:
    boundary = b"imgbatch-guard"
    head = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
    )
    tail = b"\r\n--" + boundary + b"--\r\n"
    piece = b"1,Product,https://images.example.com/a.jpg\n" * 1500  # ~64 KB
    pieces = 50 * MB // len(piece)
    yielded = 0

    def body() -> Iterator[bytes]:
        nonlocal yielded
        for block in (head, *([piece] * pieces), tail):
            yielded += len(block)
            yield block

    length = len(head) + len(piece) * pieces + len(tail)
    assert length > 49 * MB
    # A small send buffer, so the bytes the client got rid of are close to what the server
    # took in: the server cannot have read more than the generator handed out.
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)])
    with httpx.Client(base_url=locked_url, transport=transport, timeout=60) as client:
        response = client.post(
            path,
            content=body(),
            headers={
                **headers,
                "Content-Type": f"multipart/form-data; boundary={boundary.decode()}",
                "Content-Length": str(length),
            },
        )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]
    assert yielded < 1 * MB, f"{yielded / MB:.1f} MB of the body were sent"
