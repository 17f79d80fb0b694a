"""GET /api/status, /api/download and /api/requests: 404, 409 while running, pagination, the
result CSV and its failed rows, and a key's list of requests."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

import httpx

from imgbatch.api.requests import _chunked
from imgbatch.cli.stack import Stack
from tests.conftest import KeyedApi
from tests.support.client import sheet, upload, wait_for_status
from tests.support.keys import new_key
from tests.support.origin import Origin


def test_unknown_request_ids_get_404_json(api: httpx.Client) -> None:
    for path in ("/api/status/nope", "/api/download/nope"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "request nope not found"}


def test_download_is_409_until_completed_then_200(api: httpx.Client, origin: Origin) -> None:
    slow = origin.url("/slow/chelsea.jpg?delay=2")
    accepted = upload(api, sheet([(1, "Slow", slow)]))
    request_id = accepted.json()["request_id"]
    early = api.get(f"/api/download/{request_id}")
    assert early.status_code == 409
    assert early.json()["detail"]["status"] in ("pending", "in_progress")
    wait_for_status(api, request_id)
    assert api.get(f"/api/download/{request_id}").status_code == 200


def test_products_are_paged_in_input_order(api: httpx.Client, origin: Origin) -> None:
    url = origin.url("/img/rocket.jpg")
    serials = [7, 3, 9, 1, 5]
    accepted = upload(api, sheet([(s, f"P{s}", url) for s in serials]))
    request_id = accepted.json()["request_id"]
    wait_for_status(api, request_id)

    first = api.get(f"/api/status/{request_id}", params={"offset": 0, "limit": 2}).json()
    second = api.get(f"/api/status/{request_id}", params={"offset": 2, "limit": 2}).json()
    rest = api.get(f"/api/status/{request_id}", params={"offset": 4}).json()
    assert [p["serial_number"] for p in first["products"]] == [7, 3]
    assert [p["serial_number"] for p in second["products"]] == [9, 1]
    assert [p["serial_number"] for p in rest["products"]] == [5]
    assert first["products_total"] == 5
    assert api.get(f"/api/status/{request_id}", params={"limit": 1001}).status_code == 422
    assert api.get(f"/api/status/{request_id}", params={"offset": -1}).status_code == 422


def test_output_images_are_served_and_paths_cannot_escape(
    api: httpx.Client, origin: Origin
) -> None:
    accepted = upload(api, sheet([(1, "One", origin.url("/img/coffee.jpg"))]))
    status = wait_for_status(api, accepted.json()["request_id"])
    output = status["products"][0]["output_image_urls"][0]
    assert output.startswith(f"{api.base_url}/media/".replace("//media", "/media"))
    assert httpx.get(output).content[:3] == b"\xff\xd8\xff"
    assert api.get("/media/../../etc/passwd").status_code == 404
    assert api.get("/media/nope/1/0.jpg").status_code == 404


def test_listing_shows_the_keys_requests_newest_first_with_counters(
    stack: Stack, keyed_api: KeyedApi, origin: Origin
) -> None:
    _, key = new_key(stack, "lister")
    _, other_key = new_key(stack, "other-lister")
    url = origin.url("/img/rocket.jpg")
    with keyed_api.client(key) as mine, keyed_api.client(other_key) as theirs:
        ids = []
        for n in (1, 2, 3):
            rows = [(s, f"P{s}", url) for s in range(1, n + 1)]
            accepted = upload(mine, sheet(rows), filename=f"sheet-{n}.csv")
            ids.append(accepted.json()["request_id"])
            wait_for_status(mine, ids[-1])
        upload(theirs, sheet([(1, "Theirs", url)]))

        listing = mine.get("/api/requests").json()
        assert [r["request_id"] for r in listing["requests"]] == ids[::-1]
        assert listing["has_more"] is False
        newest = listing["requests"][0]
        assert newest["file_name"] == "sheet-3.csv"
        assert newest["status"] == "completed"
        assert (newest["products_total"], newest["images_done"], newest["progress"]) == (3, 3, 100)

        page = mine.get("/api/requests", params={"offset": 1, "limit": 1}).json()
        assert [r["request_id"] for r in page["requests"]] == [ids[1]]
        assert page["has_more"] is True
        assert mine.get("/api/requests", params={"status": "failed"}).json()["requests"] == []
        assert (
            len(mine.get("/api/requests", params={"status": "completed"}).json()["requests"]) == 3
        )
        assert mine.get("/api/requests", params={"status": "nope"}).status_code == 422
        assert mine.get("/api/requests", params={"limit": 101}).status_code == 422
        theirs_listed = theirs.get("/api/requests").json()["requests"]
        assert not {r["request_id"] for r in theirs_listed} & set(ids)


def test_download_of_only_the_failed_rows_keeps_the_input_columns(
    api: httpx.Client, origin: Origin
) -> None:
    good, bad = origin.url("/img/rocket.jpg"), origin.url("/status/404")
    header = ("S. No.", "Product Name", "Input Image Urls", "Supplier")
    rows = [
        (1, "Fine", good, "Acme"),
        (2, "Half", f"{good},{bad}", "=Evil"),
        (3, "Gone", bad, "Beta"),
    ]
    request_id = upload(api, sheet(rows, header=header)).json()["request_id"]
    wait_for_status(api, request_id)
    response = api.get(f"/api/download/{request_id}", params={"only": "failed"})
    assert response.status_code == 200
    assert f"imgbatch-{request_id}-failed.csv" in response.headers["content-disposition"]
    assert list(csv.reader(io.StringIO(response.text))) == [
        list(header),
        ["2", "Half", f"{good},{bad}", "'=Evil"],
        ["3", "Gone", bad, "Beta"],
    ]
    assert api.get(f"/api/download/{request_id}", params={"only": "all"}).status_code == 422


def test_streamed_rows_are_sent_in_chunks_of_whole_rows_in_order() -> None:
    async def lines(count: int) -> AsyncIterator[str]:
        for n in range(count):
            yield f"{n}\r\n"

    async def chunks(count: int, rows: int) -> list[str]:
        return [chunk async for chunk in _chunked(lines(count), rows)]

    assert asyncio.run(chunks(5, 2)) == ["0\r\n1\r\n", "2\r\n3\r\n", "4\r\n"]
    assert asyncio.run(chunks(4, 2)) == ["0\r\n1\r\n", "2\r\n3\r\n"]
    assert asyncio.run(chunks(0, 2)) == []
