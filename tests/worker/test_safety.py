"""Hostile inputs end to end: the whole hostile corpus, a decompression bomb against the real
worker's memory, and the address guard switched on for a second API + worker."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from bench.procfs import peak_rss_mb
from imgbatch.cli.stack import Stack
from tests.support.client import sheet, upload, wait_for_status
from tests.support.images import many_scan_jpeg, padded_jpeg
from tests.support.origin import Origin
from tests.support.stacks import redis_db, side_api

MB = 1024 * 1024


def _worker_rss(stack: Stack) -> list[int]:
    main = psutil.Process(stack.processes["worker"].pid)
    return [child.memory_info().rss for child in main.children()]


def test_hostile_corpus_gives_per_image_errors_and_the_rest_goes_on(
    api: httpx.Client, origin: Origin
) -> None:
    expected = {
        "truncated.jpg": "corrupt_image",
        "not_an_image.jpg": "not_an_image",
        "bomb_900mp.png": "too_many_pixels",
    }
    urls = [origin.url(f"/img/{name}") for name in expected] + [origin.url("/img/chelsea.jpg")]
    accepted = upload(api, sheet([(1, "Hostile", ",".join(urls))]))
    status = wait_for_status(api, accepted.json()["request_id"])
    product = status["products"][0]
    assert product["status"] == "partial"
    assert {e["url"].rsplit("/", 1)[1]: e["code"] for e in product["errors"]} == expected
    assert product["output_image_urls"][3] is not None


def test_a_jpeg_with_thousands_of_scans_times_out_and_the_batch_goes_on(
    api: httpx.Client, origin: Origin
) -> None:
    # 2,000 do-nothing scans over 4 MP: half a second of decoding here, and the same file at
    # 49 MP with 10,000 scans holds a process for 35 s.
    bomb = origin.put("scans-2000.jpg", many_scan_jpeg(2000))
    fine = origin.url("/img/chelsea.jpg")
    accepted = upload(api, sheet([(1, "Scans", f"{bomb},{fine}"), (2, "After", fine)]))
    status = wait_for_status(api, accepted.json()["request_id"])
    first, second = status["products"]
    assert [(e["url"], e["code"]) for e in first["errors"]] == [(bomb, "decode_timeout")]
    assert "scans" in first["errors"][0]["message"]
    assert first["output_image_urls"][1] is not None
    assert second["status"] == "completed"


def test_a_decompression_bomb_is_refused_before_decoding(
    stack: Stack, api: httpx.Client, origin: Origin
) -> None:
    # Warm every pool process up with a real photo, so the baseline includes loaded codecs.
    warm = upload(api, sheet([(i, "Warm", origin.url("/img/coffee.jpg")) for i in range(1, 5)]))
    wait_for_status(api, warm.json()["request_id"])
    before = _worker_rss(stack)

    bombs = [(i, "Bomb", origin.url("/img/bomb_900mp.png")) for i in range(1, 7)]
    accepted = upload(api, sheet(bombs))
    status = wait_for_status(api, accepted.json()["request_id"])
    assert status["images_failed"] == 6
    assert {e["code"] for p in status["products"] for e in p["errors"]} == {"too_many_pixels"}
    assert "900000000" in status["products"][0]["errors"][0]["message"].replace(",", "")

    after = _worker_rss(stack)
    # Decoding it would take 2.7 GB (30000 x 30000 x RGB); the pool must stay where it was.
    assert max(after) < max(before) + 40 * MB, (before, after)


def test_in_flight_download_bytes_are_bounded_per_process(stack: Stack, origin: Origin) -> None:
    # One pool process runs 8 products x 8 images = 64 downloads at once. Each 20 MB body used
    # to be held whole while it waited for the process's one decode slot: 1.3 GB at once.
    url = origin.put("padded-20mb.jpg", padded_jpeg(20 * MB))
    env = {"IMGBATCH_REDIS_URL": redis_db(stack, 9)}
    with (
        side_api(stack, "api-budget", env, worker_concurrency=1) as api_url,
        httpx.Client(base_url=api_url, timeout=30) as client,
    ):
        rows = [
            (p, f"Big {p}", ",".join(f"{url}?p={p}&i={i}" for i in range(8))) for p in range(1, 9)
        ]
        accepted = upload(client, sheet(rows))
        assert accepted.status_code == 202, accepted.text
        status = wait_for_status(client, accepted.json()["request_id"], timeout=300)
        (pool,) = psutil.Process(stack.processes["api-budget-worker"].pid).children()
        peak = peak_rss_mb(pool.pid)
        # Every lease is released before its image is counted, so with the batch done the
        # bodies are gone. glibc kept 370-420 MB of their space until worker/heap.py.
        held = pool.memory_info().rss / MB
    assert (status["images_done"], status["images_failed"]) == (64, 0)
    assert peak < 500, f"pool process peaked at {peak:.0f} MB"
    assert held < 250, f"pool process still holds {held:.0f} MB with the batch done"


class _Listener:
    """A loopback TCP listener that only counts the connections that reach it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def guarded(stack: Stack) -> Iterator[httpx.Client]:
    """An API and worker with the address guard on, on their own Redis database."""
    env = {
        "IMGBATCH_REDIS_URL": redis_db(stack, 5),
        "IMGBATCH_ALLOW_PRIVATE_NETWORKS": "false",
        "IMGBATCH_ALLOWED_PORTS": "[]",
    }
    with (
        side_api(stack, "api-guarded", env, worker_concurrency=1) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


LITERAL_FORMS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "127.1",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "localhost",
    "0.0.0.0",
    "169.254.169.254",
    "10.0.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "[64:ff9b::a9fe:a9fe]",
    "224.0.0.1",
]


def test_private_literal_hosts_are_row_errors_at_upload(guarded: httpx.Client) -> None:
    listener = _Listener()
    try:
        rows = [
            (i + 1, host, f"http://{host}:{listener.port}/x.jpg")
            for i, host in enumerate(LITERAL_FORMS)
        ]
        response = upload(guarded, sheet(rows))
        assert response.status_code == 422, response.text
        errors = response.json()["detail"]["errors"]
        assert [e["line"] for e in errors] == list(range(2, 2 + len(LITERAL_FORMS)))
        assert all(e["column"] == "Input Image Urls" for e in errors)
        assert all("not allowed" in e["reason"] for e in errors)
        assert listener.connections == 0
    finally:
        listener.close()


def test_names_resolving_to_private_addresses_are_blocked_at_download(
    guarded: httpx.Client,
) -> None:
    hostname = socket.gethostname()
    assert socket.gethostbyname(hostname).startswith("127."), "test needs a loopback hostname"
    listener = _Listener()
    try:
        url = f"http://{hostname}:{listener.port}/x.jpg"
        accepted = upload(guarded, sheet([(1, "Rebind", url)]))
        assert accepted.status_code == 202, accepted.text
        status: dict[str, Any] = wait_for_status(guarded, accepted.json()["request_id"])
        error = status["products"][0]["errors"][0]
        assert error["code"] == "blocked_address"
        assert listener.connections == 0
    finally:
        listener.close()


def test_redirects_are_rechecked_on_every_hop(stack: Stack, origin: Origin) -> None:
    """A worker that may reach the origin's port only: a redirect elsewhere is refused."""
    env = {
        "IMGBATCH_REDIS_URL": redis_db(stack, 6),
        "IMGBATCH_ALLOW_PRIVATE_NETWORKS": "true",
        "IMGBATCH_ALLOWED_PORTS": f"[{origin.port}]",
    }
    listener = _Listener()
    try:
        with (
            side_api(stack, "api-ports", env, worker_concurrency=1) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            target = f"http://127.0.0.1:{listener.port}/x.jpg"
            hop = origin.url("/redirect?" + str(httpx.QueryParams({"to": target})))
            fine = origin.url("/redirect-chain/2/rocket.jpg")
            accepted = upload(client, sheet([(1, "Redirected", f"{hop},{fine}")]))
            assert accepted.status_code == 202, accepted.text
            status = wait_for_status(client, accepted.json()["request_id"])
        product = status["products"][0]
        assert [e["code"] for e in product["errors"]] == ["blocked_address"]
        assert product["output_image_urls"][1] is not None
        assert listener.connections == 0
    finally:
        listener.close()
