"""POST /api/upload: the 202 contract, and bad sheets refused whole with every row error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from pymongo.database import Database

from bench.procfs import peak_rss_mb, reset_peak_rss
from imgbatch.cli.stack import Stack
from tests.support.client import HEADER, sheet, upload
from tests.support.stacks import redis_db, side_api

URL = "https://images.example.com/a.jpg"


@pytest.fixture(scope="module")
def quiet_api(stack: Stack) -> Iterator[tuple[httpx.Client, int]]:
    """An API of its own (for its memory figures) whose queue no worker consumes."""
    env = {"IMGBATCH_REDIS_URL": redis_db(stack, 7)}
    with side_api(stack, "api-quiet", env) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, stack.processes["api-quiet"].pid


def _request_ids(mongo: Database[dict[str, Any]]) -> set[str]:
    """Every request id with something stored under it: a request, staged rows or products.

    A refused upload must add none. Counting documents instead would count what an earlier
    test's dispatch is still inserting (or its staged rows being dropped) at the same time.
    """
    return {
        *mongo["requests"].distinct("_id"),
        *mongo["sheet_chunks"].distinct("request_id"),
        *mongo["products"].distinct("request_id"),
    }


def test_upload_answers_202_with_links_and_counts(api: httpx.Client) -> None:
    body = sheet([(1, "A", f"{URL},{URL}?2"), (2, "B", URL)])
    response = upload(api, body, data={"webhook_url": "https://hooks.example.com/imgbatch"})
    assert response.status_code == 202, response.text
    created = response.json()
    assert set(created) >= {
        "request_id",
        "status",
        "status_url",
        "download_url",
        "products",
        "images",
    }
    assert (created["status"], created["products"], created["images"]) == ("pending", 2, 3)
    status = api.get(f"/api/status/{created['request_id']}")
    assert status.status_code == 200
    assert status.json()["images_total"] == 3


def test_invalid_rows_are_all_reported_and_nothing_is_stored(
    api: httpx.Client, mongo: Database[dict[str, Any]]
) -> None:
    before = _request_ids(mongo)
    body = (
        "S. No.,Product Name,Input Image Urls\n"
        f"1,Good,{URL}\n"
        f"abc,Bad serial,{URL}\n"
        '3,"Multi\nline name",'
        f"{URL}\n"  # a quoted newline: the next row starts on line 6
        f"4,,{URL}\n"
        "5,No urls,\n"
        f"1,Duplicate,{URL}\n"
        "7,Bad scheme,ftp://images.example.com/x.jpg\n"
    )
    response = upload(api, body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["total_errors"] == 5
    assert detail["omitted_errors"] == 0
    located = [(e["line"], e["column"]) for e in detail["errors"]]
    assert located == [
        (3, "S. No."),
        (6, "Product Name"),
        (7, "Input Image Urls"),
        (8, "S. No."),
        (9, "Input Image Urls"),
    ]
    assert all(e["reason"] for e in detail["errors"])
    assert "line 2" in detail["errors"][3]["reason"]
    assert _request_ids(mongo) - before == set()


def test_error_list_is_capped_at_100_and_says_how_many_more(
    api: httpx.Client, mongo: Database[dict[str, Any]]
) -> None:
    before = _request_ids(mongo)
    rows = [(i, "", URL) for i in range(1, 1501)]
    response = upload(api, sheet(rows))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail["errors"]) == 100
    assert detail["total_errors"] == 1500
    assert detail["omitted_errors"] == 1400
    assert _request_ids(mongo) - before == set()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"\n\n   \n", "blank lines"),
        (b"Product Name,Input Image Urls\nA,https://images.example.com/a.jpg\n", "S. No."),
        (b"S. No.,Product Name,Input Image Urls\n", "no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a CSV"),
    ],
    ids=["empty", "blank-lines", "missing-column", "header-only", "binary"],
)
def test_unusable_files_get_a_clear_4xx(
    api: httpx.Client, mongo: Database[dict[str, Any]], body: bytes, fragment: str
) -> None:
    before = _request_ids(mongo)
    response = upload(api, body)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/json"
    assert fragment.lower() in str(response.json()["detail"]).lower()
    assert _request_ids(mongo) - before == set()


def test_missing_file_field_is_a_422_json_error(api: httpx.Client) -> None:
    response = api.post("/api/upload", data={"webhook_url": "https://x.example"})
    assert response.status_code == 422
    assert "detail" in response.json()


def test_tolerant_headers_and_bom_are_accepted(api: httpx.Client) -> None:
    body = "\ufeff  s.no , PRODUCT NAME ,input image urls\n1,A,https://images.example.com/a.jpg\n"
    response = upload(api, body.encode("utf-8"))
    assert response.status_code == 202, response.text
    assert response.json()["products"] == 1


def test_a_150k_column_sheet_is_refused_at_once_in_flat_memory(
    quiet_api: tuple[httpx.Client, int],
) -> None:
    client, pid = quiet_api
    assert upload(client, sheet([(1, "Warm", URL)])).status_code == 202  # imports, pools
    columns = [f"c{i}" for i in range(150_000)]
    body = sheet([(i, f"P{i}", URL, *([""] * 3)) for i in range(1, 21)], (*HEADER, *columns))
    assert 900_000 < len(body) < 1_100_000
    process = psutil.Process(pid)
    reset_peak_rss(pid)
    before_mb, cpu_before = peak_rss_mb(pid), process.cpu_times()

    response = upload(client, body)

    cpu_after = process.cpu_times()
    cpu = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
    assert response.status_code == 422, response.text[:500]
    assert response.json()["detail"] == (
        "too many columns: the header has 150003 named columns; the limit is 100"
    )
    # Padding every row to the header and keeping its 150,000 empty extras cost ~5 MB a row
    # and a staging chunk far past MongoDB's 16 MB document limit.
    assert peak_rss_mb(pid) - before_mb < 50
    assert cpu < 1.0  # CPU, not wall-clock: a busy machine slows the clock, not the work


def test_staged_chunks_stay_under_the_document_limit_whatever_the_rows_hold(
    quiet_api: tuple[httpx.Client, int],
) -> None:
    # Names of 4,000 four-byte characters (16 KB of UTF-8 each) and 8 KB of extras a row, all
    # within the caps: sized by characters and without the extras, 1,000 such rows made one
    # 24 MB chunk document that MongoDB refuses (a 500).
    client, _ = quiet_api
    name = "\U0001f600" * 4000
    rows = [(i, name, URL, "x" * 8000) for i in range(1, 1001)]
    response = upload(client, sheet(rows, (*HEADER, "Notes")).encode())
    assert response.status_code == 202, response.text[:500]
    assert response.json()["products"] == 1000
    assert client.post(f"/api/requests/{response.json()['request_id']}/cancel").status_code == 200


def test_the_422_for_a_bad_1mb_header_is_small(api: httpx.Client) -> None:
    header = [f"{i}{'x' * 20_000}" for i in range(50)]
    response = upload(api, sheet([(1, "A", URL)], header))
    assert response.status_code == 422
    assert "missing required columns" in response.json()["detail"]
    assert len(response.content) < 1000


def test_urls_with_credentials_are_refused_at_upload_with_the_reason(api: httpx.Client) -> None:
    secret_url = "https://user:hunter2@images.example.com/a.jpg"
    response = upload(api, sheet([(1, "A", f"{URL},{secret_url}")]))
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]["errors"]
    assert (error["line"], error["column"]) == (2, "Input Image Urls")
    assert "user name or password" in error["reason"]
    hook = upload(api, sheet([(1, "A", URL)]), data={"webhook_url": secret_url})
    assert hook.status_code == 422, hook.text
    assert "user name or password" in hook.json()["detail"]["reason"]
    assert "hunter2" not in response.text + hook.text
