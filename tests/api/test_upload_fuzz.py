"""A thousand malformed sheets at the real endpoint: every answer is a 202 or a JSON 4xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgbatch.cli.stack import Stack
from tests.support.stacks import redis_db, side_api

HEADERS = [
    "S. No.",
    "s.no",
    "Serial Number",
    "Product Name",
    "product",
    "Input Image Urls",
    "Image Urls",
    "",
    "Extra",
    "S. No.",
    '"',
    "=cmd",
    "\ufeffS. No.",
]
CELLS = [
    "1",
    "0",
    "-1",
    "2",
    "abc",
    "1.5",
    "",
    " ",
    "99999999999999999999999",
    "SKU",
    "https://images.example.com/a.jpg",
    "http://127.0.0.1/x.jpg",
    "ftp://x/y",
    "https://a.example/1.jpg,https://a.example/2.jpg",
    '"',
    '""',
    "\x00",
    "\r",
    "\n",
    "x" * 3000,
    "=HYPERLINK()",
    "caf\u00e9",
    "\u202e",
    "\t",
    ";",
    ",",
]


@st.composite
def sheets(draw: st.DrawFn) -> bytes:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(st.lists(st.sampled_from(HEADERS), min_size=0, max_size=6))
    rows = draw(
        st.lists(
            st.lists(st.one_of(st.sampled_from(CELLS), st.text(max_size=12)), max_size=7),
            max_size=8,
        )
    )
    lines = [delimiter.join(header)] + [delimiter.join(row) for row in rows]
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):  # damage it
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=16)) + data[position:]
    return data


@pytest.fixture(scope="module")
def fuzz_api(stack: Stack) -> Iterator[httpx.Client]:
    # Its own Redis database: accepted sheets are stored but no worker processes them.
    with (
        side_api(stack, "api-fuzz", {"IMGBATCH_REDIS_URL": redis_db(stack, 11)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(sheets(), st.binary(max_size=2048)))
def test_malformed_sheets_never_get_a_5xx(fuzz_api: httpx.Client, body: bytes) -> None:
    response = fuzz_api.post("/api/upload", files={"file": ("fuzz.csv", body, "text/csv")})
    assert response.status_code == 202 or 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert ("request_id" in payload) if response.status_code == 202 else ("detail" in payload)
