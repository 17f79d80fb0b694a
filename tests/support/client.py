"""Small helpers for talking to the real API the way a user's script would."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import httpx

from tests.support.waiting import wait_until

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
    body: dict[str, Any] = {}

    def reached() -> bool:
        response = api.get(f"/api/status/{request_id}", params={"limit": 1000})
        assert response.status_code == 200, response.text
        body.update(response.json())
        return body["status"] in statuses

    wait_until(reached, timeout=timeout, every=0.2, what=f"request {request_id} in {statuses}")
    return body


def result_rows(api: httpx.Client, request_id: str) -> list[list[str]]:
    response = api.get(f"/api/download/{request_id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))
