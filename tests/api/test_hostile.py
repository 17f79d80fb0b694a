"""Hostile input against the real stack (issue 22): parameters past what the database holds,
bodies before auth, stored file names, /media's temporary area, and the headers every answer
carries. Event streams have their own file (test_stream_limits.py)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from imgbatch.cli.stack import Stack
from imgbatch.storage import is_public_key
from tests.conftest import CORPUS
from tests.support.client import sheet, upload, wait_for_status
from tests.support.keys import client, new_key
from tests.support.origin import Origin
from tests.support.stacks import side_api

MB = 1024 * 1024
HUGE = "2411699515765390196483293184"


@pytest.fixture(scope="module")
def locked(stack: Stack) -> Iterator[tuple[str, str]]:
    """An API with keys required and the default body caps, and a key for it."""
    with side_api(stack, "api-hostile", {"IMGBATCH_AUTH_DISABLED": "false"}) as url:
        _, key = new_key(stack, "hostile")
        yield url, key


@pytest.mark.parametrize(
    "query",
    [f"offset={HUGE}", "offset=19377686650977939456", "offset=1000000001", f"limit={HUGE}"],
)
def test_integers_past_what_the_database_holds_are_a_422(
    api: httpx.Client, origin: Origin, query: str
) -> None:
    request_id = upload(api, sheet([(1, "A", origin.url("/img/rocket.jpg"))])).json()["request_id"]
    subscriber = api.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.com/x", "events": ["request.completed"]},
    ).json()["id"]
    for path in (
        "/api/requests",
        f"/api/status/{request_id}",
        f"/api/webhooks/{subscriber}/deliveries",
    ):
        response = api.get(f"{path}?{query}")
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"][0]["loc"][:1] == ["query"]
    # The largest offset allowed is still an ordinary (empty) page.
    page = api.get("/api/requests?offset=1000000000")
    assert page.status_code == 200
    assert page.json()["requests"] == []


def _slow_body(total: int, sent: list[int]) -> Iterator[bytes]:
    piece = b"[" + b"0," * 32 * 1024  # 64 KB of a JSON array that never closes
    while sent[0] < total:
        sent[0] += len(piece)
        yield piece


def _small_send_buffer() -> httpx.HTTPTransport:
    # The bytes the client got rid of are then close to what the server took in.
    return httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)])


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_50mb_json_body_without_a_key_is_a_401_before_1mb_is_read(
    locked: tuple[str, str], declared: bool
) -> None:
    url, _ = locked
    sent = [0]
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(50 * MB)
    with httpx.Client(base_url=url, transport=_small_send_buffer(), timeout=60) as anonymous:
        response = anonymous.post(
            "/api/webhooks", content=_slow_body(50 * MB, sent), headers=headers
        )
    assert response.status_code in (401, 413), response.text
    if not declared:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert sent[0] < 1 * MB, f"{sent[0] / MB:.1f} MB of the body were sent"


def test_json_bodies_are_capped_at_max_body_bytes_even_with_a_key(locked: tuple[str, str]) -> None:
    url, key = locked
    sent = [0]
    with client(url, key) as keyed:
        declared = keyed.post(
            "/api/webhooks",
            content=b"x" * (64 * 1024 + 1),
            headers={"Content-Type": "application/json"},
        )
        assert declared.status_code == 413, declared.text
        assert "larger than the limit of 65536 bytes" in declared.json()["detail"]
    with httpx.Client(
        base_url=url, transport=_small_send_buffer(), timeout=60, headers={"X-API-Key": key}
    ) as keyed:
        chunked = keyed.post(
            "/api/webhooks",
            content=_slow_body(50 * MB, sent),
            headers={"Content-Type": "application/json"},
        )
    assert chunked.status_code == 413, chunked.text
    assert sent[0] < 2 * MB


def test_request_models_bound_their_strings_and_lists(api: httpx.Client) -> None:
    long_url = "https://hooks.example.com/" + "a" * 3000
    too_long = api.post("/api/webhooks", json={"url": long_url, "events": ["request.completed"]})
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "url"]
    many = api.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.com/x", "events": ["request.completed"] * 1000},
    )
    assert many.status_code == 422
    assert many.json()["detail"][0]["loc"] == ["body", "events"]


# ESC sequences (a hyperlink, a colour), BEL, backspace, DEL, NEL and CSI (C1), NUL: sent as
# raw bytes, which httpx's own multipart encoder would percent-encode.
NAME_SENT = "sale\x1b]8;;https://evil.example/\x07\x1b[31mred\x08\x7f\u0085\u009b2J\x00.csv"
NAME_STORED = "sale]8;;https://evil.example/[31mred2J.csv"


def _raw_upload(api: httpx.Client, path: str, name: str, body: bytes, kind: str) -> str:
    boundary = "hostile-names"
    form = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = api.post(
        path, content=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code in (200, 202), response.text
    return str(response.json()["request_id"])


def test_control_characters_are_stripped_from_stored_file_names(
    api: httpx.Client, origin: Origin
) -> None:
    rows = sheet([(1, "A", origin.url("/img/rocket.jpg"))]).encode()
    sheet_id = _raw_upload(api, "/api/upload", NAME_SENT, rows, "text/csv")
    image = (CORPUS / "rocket.jpg").read_bytes()
    image_id = _raw_upload(
        api, "/api/images", NAME_SENT.replace(".csv", ".jpg"), image, "image/jpeg"
    )
    assert wait_for_status(api, sheet_id)["file_name"] == NAME_STORED
    # An image's name is kept without its folders (everything up to the last "/").
    assert wait_for_status(api, image_id)["file_name"] == "[31mred2J.jpg"
    listed = {r["request_id"]: r["file_name"] for r in api.get("/api/requests").json()["requests"]}
    assert listed[sheet_id] == NAME_STORED


@pytest.mark.parametrize(
    "key", ["tmp/x/original", "TMP/x/original", "Tmp/x/original", "a/../tMp/x"]
)
def test_the_temporary_area_is_never_public_however_it_is_cased(key: str) -> None:
    assert not is_public_key(key)


def test_media_refuses_tmp_in_any_case_and_every_answer_says_nosniff(
    api: httpx.Client, origin: Origin, locked: tuple[str, str]
) -> None:
    image = (CORPUS / "rocket.jpg").read_bytes()
    job = api.post("/api/images", files={"file": ("r.jpg", image, "image/jpeg")}).json()
    status = wait_for_status(api, job["request_id"])
    output = status["products"][0]["output_image_urls"][0]
    served = httpx.get(output)
    assert served.status_code == 200
    assert served.headers["x-content-type-options"] == "nosniff"
    for spelling in ("tmp", "TMP", "Tmp"):
        hidden = api.get(f"/media/{spelling}/{job['request_id']}/original")
        assert hidden.status_code == 404
        assert hidden.headers["x-content-type-options"] == "nosniff"
    for answered in (
        api.get("/api/requests"),
        api.get(f"/api/status/{uuid.uuid4().hex}"),
        api.get("/api/requests?offset=-1"),
        httpx.post(f"{locked[0]}/api/webhooks", json={}),  # the guard's own 401
    ):
        assert answered.headers["x-content-type-options"] == "nosniff", answered.request.url


def test_docs_and_redoc_load_only_their_own_packaged_scripts(api: httpx.Client) -> None:
    for path in ("/docs", "/redoc"):
        page = api.get(path)
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assert "cdn" not in page.text and "googleapis" not in page.text
        scripts = [part.split('"', 1)[0] for part in page.text.split('src="')[1:]]
        styles = [part.split('"', 1)[0] for part in page.text.split('href="')[1:]]
        assert scripts, page.text
        for asset in scripts + styles:
            assert asset.startswith("/"), asset  # on this server, nowhere else
            served = api.get(asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 0
