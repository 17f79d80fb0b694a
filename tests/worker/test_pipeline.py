"""End to end through the real stack: upload -> worker -> status -> result CSV -> output images."""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image, ImageChops, ImageStat

from tests.conftest import CORPUS
from tests.support.client import result_rows, sheet, upload, wait_for_status
from tests.support.origin import Origin

PHOTOS = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg", "hubble_deep_field.jpg"]


def _fetch_image(url: str) -> tuple[bytes, Image.Image]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, url
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return response.content, image


def _q95_size(path: str) -> int:
    buffer = io.BytesIO()
    with Image.open(CORPUS / path) as source:
        source.convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.tell()


def _product(status: dict[str, Any], serial: int) -> dict[str, Any]:
    return next(p for p in status["products"] if p["serial_number"] == serial)


def test_multi_product_sheet_is_processed_end_to_end(api: httpx.Client, origin: Origin) -> None:
    rows = [
        (1, "Poster", ",".join(origin.url(f"/img/{name}") for name in PHOTOS[:3]), "Acme", "red"),
        (
            2,
            "Mug",
            f" {origin.url('/img/rocket.jpg')} , {origin.url('/img/coffee.jpg')} ",
            "Acme",
            "",
        ),
        (3, "Print", origin.url("/img/hubble_deep_field.jpg"), "Orbit", "blue"),
    ]
    body = sheet(rows, header=("S. No.", "Product Name", "Input Image Urls", "Supplier", "Colour"))
    accepted = upload(api, body)
    assert accepted.status_code == 202, accepted.text
    created = accepted.json()
    assert created["status"] == "pending"
    assert created["products"] == 3
    assert created["images"] == 6
    assert created["status_url"].endswith(f"/api/status/{created['request_id']}")
    assert created["download_url"].endswith(f"/api/download/{created['request_id']}")

    status = wait_for_status(api, created["request_id"])
    assert status["status"] == "completed"
    assert status["progress"] == 100
    assert (status["products_total"], status["products_done"]) == (3, 3)
    assert (status["images_total"], status["images_done"], status["images_failed"]) == (6, 6, 0)
    assert status["completed_at"] is not None
    assert [p["serial_number"] for p in status["products"]] == [1, 2, 3]

    for product in status["products"]:
        assert product["status"] == "completed"
        assert product["errors"] == []
        assert len(product["output_image_urls"]) == len(product["input_image_urls"])
        for source_url, output_url in zip(
            product["input_image_urls"], product["output_image_urls"], strict=True
        ):
            name = source_url.rsplit("/", 1)[1]
            data, image = _fetch_image(output_url)
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            with Image.open(CORPUS / name) as source:
                assert image.size == source.size
            assert len(data) < _q95_size(name)

    rows_out = result_rows(api, created["request_id"])
    assert rows_out[0] == [
        "S. No.",
        "Product Name",
        "Input Image Urls",
        "Supplier",
        "Colour",
        "Output Image Urls",
        "Errors",
        "Warnings",
    ]
    assert [r[0] for r in rows_out[1:]] == ["1", "2", "3"]
    assert [r[3:5] for r in rows_out[1:]] == [["Acme", "red"], ["Acme", ""], ["Orbit", "blue"]]
    for row, product in zip(rows_out[1:], status["products"], strict=True):
        assert row[2].split(",") == product["input_image_urls"]
        assert row[5].split(",") == product["output_image_urls"]
        assert row[6] == ""


def test_bad_images_become_per_image_errors_and_the_request_completes(
    api: httpx.Client, origin: Origin
) -> None:
    good = origin.url("/img/chelsea.jpg")
    rows = [
        (
            1,
            "Mixed",
            ",".join([good, origin.url("/status/404"), origin.url("/img/not_an_image.jpg")]),
        ),
        (2, "Broken", origin.url("/img/truncated.jpg")),
        (3, "Fine", origin.url("/img/coffee.jpg")),
    ]
    accepted = upload(api, sheet(rows))
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    status = wait_for_status(api, request_id)

    assert status["status"] == "completed"
    assert (status["images_total"], status["images_done"], status["images_failed"]) == (5, 2, 3)
    mixed, broken, fine = (_product(status, s) for s in (1, 2, 3))
    assert mixed["status"] == "partial"
    assert mixed["output_image_urls"][0] is not None
    assert mixed["output_image_urls"][1:] == [None, None]
    assert [(e["url"], e["code"]) for e in mixed["errors"]] == [
        (origin.url("/status/404"), "http_error"),
        (origin.url("/img/not_an_image.jpg"), "not_an_image"),
    ]
    assert "404" in mixed["errors"][0]["message"]
    assert broken["status"] == "failed"
    assert [e["code"] for e in broken["errors"]] == ["corrupt_image"]
    assert fine["status"] == "completed"

    rows_out = result_rows(api, request_id)
    mixed_row = rows_out[1]
    assert mixed_row[3].split(",")[1:] == ["", ""]
    assert "http_error" in mixed_row[4] and "not_an_image" in mixed_row[4]
    assert origin.url("/status/404") in mixed_row[4]
    assert "corrupt_image" in rows_out[2][4]


def test_awkward_formats_become_correct_rgb_jpegs(api: httpx.Client, origin: Origin) -> None:
    names = [
        "chelsea_cmyk.jpg",
        "camera_gray.jpg",
        "logo_alpha.png",
        "half_transparent.png",
        "chelsea.webp",
        "chelsea_progressive.jpg",
        "chelsea_exif_rotated.jpg",
        "animated.gif",
    ]
    rows = [(i + 1, name, origin.url(f"/img/{name}")) for i, name in enumerate(names)]
    accepted = upload(api, sheet(rows))
    assert accepted.status_code == 202, accepted.text
    status = wait_for_status(api, accepted.json()["request_id"])
    assert status["images_failed"] == 0, status["products"]

    outputs = {
        p["product_name"]: _fetch_image(p["output_image_urls"][0])[1] for p in status["products"]
    }
    for image in outputs.values():
        assert (image.format, image.mode) == ("JPEG", "RGB")
    with Image.open(CORPUS / "chelsea.jpg") as reference:
        reference_rgb = reference.convert("RGB")
    # Upright: the file stores chelsea's pixels with Orientation=6 (display rotated 90 degrees
    # clockwise); the output's pixels must already be turned, since its EXIF tag is gone.
    rotated = outputs["chelsea_exif_rotated.jpg"]
    upright = reference_rgb.transpose(Image.Transpose.ROTATE_270)
    assert rotated.size == upright.size == (300, 451)
    difference = ImageStat.Stat(ImageChops.difference(rotated, upright)).mean
    assert max(difference) < 12
    assert not rotated.getexif()
    # CMYK converted without inverting the colours.
    cmyk_mean = ImageStat.Stat(outputs["chelsea_cmyk.jpg"]).mean
    reference_mean = ImageStat.Stat(reference_rgb).mean
    assert all(abs(a - b) < 25 for a, b in zip(cmyk_mean, reference_mean, strict=True))
    # Transparency flattened on white: the transparent (red) half comes out white, not red.
    half = outputs["half_transparent.png"]
    left, right = half.getpixel((8, 32)), half.getpixel((56, 32))
    assert isinstance(left, tuple) and min(left) > 235
    assert isinstance(right, tuple) and right[2] > 200 and right[0] < 40
