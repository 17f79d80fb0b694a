"""POST /api/upload: the 202 contract, and bad sheets refused whole with every row error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo.database import Database

from tests.support.client import sheet, upload

URL = "https://images.example.com/a.jpg"


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
