"""A completed request's result files (CSV, failed rows, JSON Lines) are written once into the
media store and streamed from it: the same bytes as the live rendering, with an ETag (304), a
length and byte ranges (206, 416); a retry writes them again; they are never served as media."""

from __future__ import annotations

import csv
import io
import shutil
import uuid

import httpx

from imgbatch.cli.stack import Stack
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.waiting import wait_until

HEADER = ("S. No.", "Product Name", "Input Image Urls", "Supplier")
DOWNLOADS = {
    "csv": ("/api/download/{}", {}),
    "failed": ("/api/download/{}", {"only": "failed"}),
    "jsonl": ("/api/requests/{}/results", {}),
}


def stored(api: httpx.Client, request_id: str, kind: str = "csv") -> httpx.Response:
    """The download, once it is served from the stored file (it has a length: a live rendering
    is sent chunked, without one)."""
    path, params = DOWNLOADS[kind]
    seen: list[httpx.Response] = []

    def written() -> bool:
        response = api.get(path.format(request_id), params=params)
        assert response.status_code == 200, response.text
        seen.append(response)
        return "content-length" in response.headers

    wait_until(written, timeout=60, every=0.1, what=f"the stored {kind} file of {request_id}")
    return seen[-1]


def test_downloads_are_stored_files_with_the_live_bytes_etag_and_ranges(
    stack: Stack, api: httpx.Client, origin: Origin
) -> None:
    good, bad = origin.url("/img/rocket.jpg"), origin.url("/status/404")
    rows = [(1, "Fine", good, "Acme"), (2, "Half", f"{good},{bad}", "=Evil")]
    request_id = upload(api, sheet(rows, header=HEADER)).json()["request_id"]
    wait_for_status(api, request_id)

    files = {kind: stored(api, request_id, kind) for kind in DOWNLOADS}
    table = list(csv.reader(io.StringIO(files["csv"].text)))
    assert table[0] == [*HEADER, "Output Image Urls", "Errors", "Warnings"]
    assert [row[:4] for row in table[1:]] == [
        ["1", "Fine", good, "Acme"],
        ["2", "Half", f"{good},{bad}", "'=Evil"],
    ]
    assert table[2][5].startswith(f"{bad} -> http_error: ")
    assert list(csv.reader(io.StringIO(files["failed"].text)))[1:] == [
        ["2", "Half", f"{good},{bad}", "'=Evil"]
    ]
    assert [line.count('"status"') for line in files["jsonl"].text.splitlines()] == [1, 1, 1]
    for kind, response in files.items():
        assert response.headers["accept-ranges"] == "bytes"
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.headers["etag"].endswith(f'-{kind}"')
        assert response.headers["cache-control"] == "private, no-cache"

    # The same bytes and validators when rendered live (the files removed from the store).
    shutil.rmtree(stack.data_dir / "media" / "results" / request_id)
    for kind, (path, params) in DOWNLOADS.items():
        live = api.get(path.format(request_id), params=params)
        assert live.status_code == 200
        assert "content-length" not in live.headers
        assert live.content == files[kind].content
        assert live.headers["etag"] == files[kind].headers["etag"]
        unchanged = api.get(
            path.format(request_id),
            params=params,
            headers={"If-None-Match": files[kind].headers["etag"]},
        )
        assert (unchanged.status_code, unchanged.content) == (304, b"")


def test_etag_304_and_byte_ranges_of_a_stored_file(api: httpx.Client, origin: Origin) -> None:
    rows = [(n, f"Product {n}", origin.url(f"/img/rocket.jpg?n={n}")) for n in range(1, 6)]
    request_id = upload(api, sheet(rows)).json()["request_id"]
    wait_for_status(api, request_id)
    for kind, (template, params) in DOWNLOADS.items():
        full = stored(api, request_id, kind)
        body, tag, size = full.content, full.headers["etag"], len(full.content)
        path = template.format(request_id)

        def get(headers: dict[str, str], path: str = path, params: dict = params) -> httpx.Response:
            return api.get(path, params=params, headers=headers)

        assert get({"If-None-Match": tag}).status_code == 304
        assert get({"If-None-Match": f'W/"other", {tag}'}).status_code == 304
        assert get({"If-None-Match": '"other"'}).content == body
        for spec, expected in (
            ("bytes=0-9", (0, 9)),
            ("bytes=10-", (10, size - 1)),
            ("bytes=-7", (size - 7, size - 1)),
            (f"bytes=5-{size + 100}", (5, size - 1)),
        ):
            part = get({"Range": spec})
            assert part.status_code == 206, (kind, spec)
            first, last = expected
            assert part.content == body[first : last + 1]
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert part.headers["content-length"] == str(last - first + 1)
        past = get({"Range": f"bytes={size}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{size}"
        # Ranges of another version, or several ranges: the whole file.
        assert get({"Range": "bytes=0-9", "If-Range": '"old"'}).content == body
        assert get({"Range": "bytes=0-1,4-5"}).content == body
        assert get({"Range": "bytes=0-9", "If-Range": tag}).status_code == 206


def test_a_retry_writes_the_files_again(api: httpx.Client, origin: Origin) -> None:
    # Fails both download attempts of the first run, succeeds on the retry.
    flaky = origin.url(f"/flaky/{uuid.uuid4().hex}/2/chelsea.jpg")
    request_id = upload(api, sheet([(1, "Flaky", flaky)])).json()["request_id"]
    assert wait_for_status(api, request_id)["images_failed"] == 1
    first = stored(api, request_id)
    assert list(csv.reader(io.StringIO(first.text)))[1][4].startswith(f"{flaky} -> ")
    assert stored(api, request_id, "failed").text.count("\r\n") == 2

    assert api.post(f"/api/requests/{request_id}/retry").status_code == 202
    status = wait_for_status(api, request_id)
    assert status["images_failed"] == 0
    output = status["products"][0]["output_image_urls"][0]
    again = stored(api, request_id)
    assert again.headers["etag"] != first.headers["etag"]
    assert list(csv.reader(io.StringIO(again.text)))[1][3:5] == [output, ""]
    assert stored(api, request_id, "failed").text.count("\r\n") == 1
    # The old version's validator no longer matches: the new file, not a 304.
    fresh = api.get(f"/api/download/{request_id}", headers={"If-None-Match": first.headers["etag"]})
    assert (fresh.status_code, fresh.content) == (200, again.content)


def test_result_files_are_never_served_as_media(api: httpx.Client, origin: Origin) -> None:
    request_id = upload(api, sheet([(1, "One", origin.url("/img/rocket.jpg"))])).json()[
        "request_id"
    ]
    wait_for_status(api, request_id)
    generation = stored(api, request_id).headers["etag"].strip('"').rsplit("-", 1)[0]
    for key in (
        f"results/{request_id}/{generation}/results.csv",
        f"o/../results/{request_id}/{generation}/results.csv",
    ):
        assert api.get(f"/media/{key}").status_code == 404, key
