"""Small helpers for talking to the real API the way a user's script would."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from typing import Any

import httpx

HEADER = ("S. No.", "Product Name", "Input Image Urls")


def sheet(rows: Sequence[Sequence[object]], header: Sequence[str] = HEADER) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def upload(
    api: httpx.Client,
    body: str | bytes,
    *,
    filename: str = "products.csv",
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return api.post(
        "/api/upload",
        files={"file": (filename, body, "text/csv")},
        data=data or {},
        headers=headers or {},
    )


def wait_for_status(
    api: httpx.Client,
    request_id: str,
    statuses: Sequence[str] = ("completed", "failed"),
    *,
    timeout: float = 120.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/api/status/{request_id}", params={"limit": 1000})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"request {request_id} still {body['status']} after {timeout}s")
        time.sleep(0.2)


def result_rows(api: httpx.Client, request_id: str) -> list[list[str]]:
    response = api.get(f"/api/download/{request_id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))
