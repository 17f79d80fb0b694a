"""Shopify's product CSV through the real stack: uploaded as exported, downloaded back with
``?format=shopify`` in the same columns, rows and order, only the image URL cells replaced by
served outputs."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import httpx
from PIL import Image

from tests.api.test_result_files import stored
from tests.support.client import upload, wait_for_status
from tests.support.origin import Origin
from tests.support.waiting import wait_until

EXPORT = Path(__file__).parents[1] / "fixtures" / "shopify" / "products_export.csv"
URL_COLUMNS = ("Image Src", "Variant Image")


def _export(origin: Origin) -> str:
    """The fixture export with this test's own image URLs (fresh bytes for every run)."""
    token = uuid.uuid4().hex
    text = EXPORT.read_text(encoding="utf-8")
    return text.replace("{origin}", origin.url("").rstrip("/")).replace(
        "?shop=", f"?t={token}&shop="
    )


def _stored_shopify(api: httpx.Client, request_id: str) -> httpx.Response:
    """``?format=shopify`` once it is served from the stored file (it then has a length)."""
    seen: list[httpx.Response] = []

    def written() -> bool:
        response = api.get(f"/api/download/{request_id}", params={"format": "shopify"})
        assert response.status_code == 200, response.text
        seen.append(response)
        return "content-length" in response.headers

    wait_until(written, timeout=60, every=0.1, what=f"the stored Shopify file of {request_id}")
    return seen[-1]


def _table(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_a_shopify_export_goes_in_as_is_and_comes_back_with_hosted_images(
    api: httpx.Client, origin: Origin
) -> None:
    export = _export(origin)
    accepted = upload(api, export.encode(), filename="products_export_1.csv")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["products"] == 4  # t-shirt, mug, poster, gift card
    request_id = accepted.json()["request_id"]
    status = wait_for_status(api, request_id)
    assert status["status"] == "completed"

    products = {p["product_name"]: p for p in status["products"]}
    shirt = products["Example T-Shirt"]
    # Image Src in Image Position order, then the variant image that is no Image Src; a URL
    # used twice in the product is one image.
    assert [u.split("shop=")[1] for u in shirt["input_image_urls"]] == [
        "small",
        "front",
        "back",
        "large",
    ]
    assert products["Gift Card"]["input_image_urls"] == []

    response = _stored_shopify(api, request_id)
    assert response.headers["content-type"].startswith("text/csv")
    assert "shopify.csv" in response.headers["content-disposition"]
    uploaded, returned = _table(export), _table(response.text)
    assert returned[0] == uploaded[0]
    assert len(returned) == len(uploaded)
    url_columns = [uploaded[0].index(name) for name in URL_COLUMNS]

    hosted: dict[str, str] = {}
    for product in status["products"]:
        for image in product["images"]:
            if image["status"] == "done":
                hosted[image["url"]] = image["output_url"]
    replaced = 0
    for line, (before, after) in enumerate(zip(uploaded, returned, strict=True), start=1):
        assert len(after) == len(before), line
        for column, (cell, out) in enumerate(zip(before, after, strict=True)):
            if column in url_columns and cell in hosted:
                assert out == hosted[cell], (line, uploaded[0][column])
                replaced += 1
            else:
                # Byte for byte: no formula guard on "=Example...", no stripped "  MUG-350",
                # the HTML body with its commas, quotes and newlines as it was, and the URL of
                # an image that failed left as it was.
                assert out == cell, (line, uploaded[0][column])
    assert replaced == 7  # 4 Image Src + 3 Variant Image cells with a done image
    assert "/status/404" in returned[6][url_columns[0]]

    # The replaced cells are served outputs: JPEGs of the sources' sizes.
    for cell in {row[column] for row in returned[1:] for column in url_columns if row[column]}:
        if cell in hosted.values():
            served = httpx.get(cell)
            assert served.status_code == 200
            with Image.open(io.BytesIO(served.content)) as image:
                assert image.format == "JPEG"
                image.load()

    assert response.content == b"".join(_by_ranges(api, request_id))


def _by_ranges(api: httpx.Client, request_id: str) -> list[bytes]:
    """The stored file by ranges: the same bytes, served with Range like the other files."""
    head = api.get(f"/api/download/{request_id}", params={"format": "shopify"})
    size = int(head.headers["content-length"])
    first = api.get(
        f"/api/download/{request_id}",
        params={"format": "shopify"},
        headers={"Range": f"bytes=0-{size // 2 - 1}"},
    )
    rest = api.get(
        f"/api/download/{request_id}",
        params={"format": "shopify"},
        headers={"Range": f"bytes={size // 2}-"},
    )
    assert (first.status_code, rest.status_code) == (206, 206)
    return [first.content, rest.content]


def test_the_default_csv_of_a_shopify_upload_and_a_plain_sheet_without_shopify(
    api: httpx.Client, origin: Origin
) -> None:
    export = _export(origin)
    request_id = upload(api, export.encode()).json()["request_id"]
    status = wait_for_status(api, request_id)
    table = _table(stored(api, request_id).text)
    assert table[0] == [
        "S. No.",
        "Product Name",
        "Input Image Urls",
        "Handle",
        "Output Image Urls",
        "Errors",
        "Warnings",
    ]
    assert [row[:2] + row[3:4] for row in table[1:]] == [
        ["1", "Example T-Shirt", "example-t-shirt"],
        ["2", "Enamel Mug, 350 ml", "enamel-mug"],
        ["3", "Poster", "broken-poster"],
        ["4", "Gift Card", "gift-card"],
    ]
    assert table[1][4].split(",") == status["products"][0]["output_image_urls"]

    plain = upload(
        api, f"S. No.,Product Name,Input Image Urls\n1,A,{origin.url('/img/rocket.jpg')}\n"
    )
    plain_id = plain.json()["request_id"]
    wait_for_status(api, plain_id)
    refused = api.get(f"/api/download/{plain_id}", params={"format": "shopify"})
    assert refused.status_code == 422
    assert "Shopify" in refused.text


def test_shopify_row_errors_name_the_line_and_the_column(api: httpx.Client) -> None:
    header = EXPORT.read_text(encoding="utf-8").splitlines()[0]
    columns = header.split(",")

    def line(**cells: str) -> str:
        return ",".join(cells.get(name, "") for name in columns)

    body = "\n".join(
        [
            header,
            line(Handle="tee", Title="Tee", **{"Image Src": "https://example.com/a.jpg"}),
            line(Handle="tee", **{"Image Src": "ftp://example.com/b.jpg", "Image Position": "x"}),
            line(Title="no handle"),
            line(Handle="mug", **{"Variant Image": "not a url"}),
            line(Handle="tee", **{"Image Src": "https://example.com/c.jpg"}),
        ]
    )
    refused = upload(api, body)
    assert refused.status_code == 422, refused.text
    errors = [(e["line"], e["column"]) for e in refused.json()["detail"]["errors"]]
    assert errors == [
        (3, "Image Src"),
        (3, "Image Position"),
        (4, "Handle"),
        (5, "Variant Image"),
        (6, "Handle"),
    ]
    reasons = [e["reason"] for e in refused.json()["detail"]["errors"]]
    assert "absolute http(s) URL" in reasons[0]
    assert "first appears on line 2" in reasons[4]
