"""Profiles, per-image records and reuse through the real stack: variants decoded, EXIF, the
result CSV's columns, duplicates within and across requests, and 304s on re-import."""

from __future__ import annotations

import csv
import io
import json
import shutil
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from imgbatch.cli.stack import Stack
from imgbatch.imaging import compress_image
from imgbatch.imaging.profiles import storefront_profile
from imgbatch.models.requests import RequestStatus
from imgbatch.worker.dispatch import dispatch_request
from imgbatch.worker.products import process_products
from tests.conftest import CORPUS
from tests.support.client import result_rows, sheet, upload, wait_for_status
from tests.support.inprocess import isolated_runtime
from tests.support.origin import Origin
from tests.support.seeding import seed_request


def _unique(origin: Origin, name: str) -> str:
    """A URL whose bytes no other test has: its outputs are this test's own."""
    return origin.url(f"/unique/{name}?t={uuid.uuid4().hex}")


def _decoded(url: str) -> tuple[httpx.Response, Image.Image]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, url
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return response, image


def _redirect_to(origin: Origin, url: str) -> str:
    """Another URL with the same bytes: the origin redirects it to ``url``."""
    return origin.url(f"/redirect?to={quote(httpx.URL(url).raw_path.decode(), safe='')}")


def _path(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


def _sent_headers(origin: Origin, path: str) -> list[dict[str, str]]:
    paths = origin.requests.paths()
    return [origin.requests.headers(i) for i, sent in enumerate(paths) if sent == path]


def _images(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [image for product in status["products"] for image in product["images"]]


def test_storefront_variants_records_and_csv_columns(api: httpx.Client, origin: Origin) -> None:
    photo, rotated, small = (
        _unique(origin, "coffee_4mp.jpg"),
        _unique(origin, "chelsea_exif_rotated.jpg"),
        _unique(origin, "astronaut.jpg"),
    )
    missing = origin.url("/status/404")
    rows = [(1, "Coffee", f"{photo},{missing}"), (2, "Cat", rotated), (3, "Small", small)]
    accepted = upload(api, sheet(rows), data={"profile": "storefront"})
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    status = wait_for_status(api, request_id)
    assert (status["images_done"], status["images_failed"]) == (3, 1)

    coffee, cat, tiny = (p["images"] for p in status["products"])
    assert [image["index"] for image in coffee] == [0, 1]
    assert coffee[1]["status"] == "failed"
    assert coffee[1]["error"]["code"] == "http_error"
    assert coffee[1]["variants"] == {}
    expected = {
        "original": ("jpeg", "JPEG", (2400, 1600)),
        "thumbnail": ("webp", "WEBP", (150, 100)),
        "medium": ("webp", "WEBP", (600, 400)),
        "large": ("webp", "WEBP", (1200, 800)),
    }
    record = coffee[0]
    assert record["status"] == "done"
    assert record["url"] == photo
    assert list(record["variants"]) == list(expected)
    for name, (fmt, pillow_format, size) in expected.items():
        variant = record["variants"][name]
        response, image = _decoded(variant["url"])
        assert (image.format, image.size) == (pillow_format, size), name
        assert (variant["format"], variant["width"], variant["height"]) == (fmt, *size)
        assert variant["bytes"] == len(response.content)
        assert response.headers["content-type"] == f"image/{fmt}"
        assert "immutable" in response.headers["cache-control"]
    assert record["output_url"] == record["variants"]["original"]["url"]
    assert status["products"][0]["output_image_urls"] == [record["output_url"], None]
    source = (CORPUS / "coffee_4mp.jpg").read_bytes()
    assert record["source"]["format"] == "jpeg"
    assert (record["source"]["width"], record["source"]["height"]) == (2400, 1600)
    assert record["source"]["bytes"] > len(source)  # the origin's unique suffix
    assert len(record["source"]["sha256"]) == 64
    assert record["exif"] is None
    assert record["dominant_color"].startswith("#") and len(record["dominant_color"]) == 7
    assert isinstance(record["placeholder"], str) and len(record["placeholder"]) >= 20
    assert record["reused"] is None
    assert record["error"] is None
    assert "resize:thumbnail" in record["operations"]

    # EXIF from a photo that carries it, read before it was stripped; no coordinates.
    assert cat[0]["exif"] == {
        "make": "ExampleCam",
        "model": "Model X",
        "lens": None,
        "taken_at": None,
        "orientation": 6,
        "software": None,
        "has_gps": True,
    }
    _, thumbnail = _decoded(cat[0]["variants"]["thumbnail"]["url"])
    assert thumbnail.size == (100, 150)  # upright, aspect kept
    assert not thumbnail.getexif()
    # Never upscaled, never a second full-size encode: a 512 px source's medium and large
    # are its full-size original JPEG.
    assert tiny[0]["variants"]["medium"]["url"] == tiny[0]["variants"]["large"]["url"]
    assert tiny[0]["variants"]["large"]["url"] == tiny[0]["variants"]["original"]["url"]
    assert tiny[0]["variants"]["large"]["format"] == "jpeg"
    assert tiny[0]["variants"]["large"]["width"] == 512

    rows_out = result_rows(api, request_id)
    assert rows_out[0] == [
        "S. No.",
        "Product Name",
        "Input Image Urls",
        "Output Image Urls",
        "Thumbnail Image Urls",
        "Medium Image Urls",
        "Large Image Urls",
        "Errors",
        "Warnings",
    ]
    first = rows_out[1]
    assert first[3].split(",") == [record["output_url"], ""]
    assert first[4].split(",") == [record["variants"]["thumbnail"]["url"], ""]
    assert first[6].split(",") == [record["variants"]["large"]["url"], ""]
    assert "http_error" in first[7]
    assert rows_out[2][5] == cat[0]["variants"]["medium"]["url"]

    # Every record of the request in one streamed call, in input order.
    lines = api.get(f"/api/requests/{request_id}/results")
    assert lines.status_code == 200
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in lines.text.splitlines()]
    assert [(r["serial_number"], r["index"]) for r in records] == [(1, 0), (1, 1), (2, 0), (3, 0)]
    assert records[0]["variants"] == record["variants"]
    assert records[2]["exif"]["orientation"] == 6


def test_a_default_request_keeps_todays_csv_and_bytes(api: httpx.Client, origin: Origin) -> None:
    url = _unique(origin, "rocket.jpg")
    request_id = upload(api, sheet([(1, "Rocket", url)])).json()["request_id"]
    status = wait_for_status(api, request_id)
    rows_out = result_rows(api, request_id)
    assert rows_out[0] == [
        "S. No.",
        "Product Name",
        "Input Image Urls",
        "Output Image Urls",
        "Errors",
        "Warnings",
    ]
    record = status["products"][0]["images"][0]
    assert list(record["variants"]) == ["original"]
    served = httpx.get(record["output_url"]).content
    source = httpx.get(url).content
    assert served == compress_image(source, quality=50, max_pixels=50_000_000).data


def test_unknown_profile_is_refused_with_the_valid_names(api: httpx.Client) -> None:
    response = upload(api, sheet([(1, "X", "https://example.com/a.jpg")]), data={"profile": "x"})
    assert response.status_code == 422
    assert response.json()["detail"]["valid_profiles"][:2] == ["default", "storefront"]


def test_the_same_bytes_twice_in_one_chunk_are_rendered_once(
    api: httpx.Client, origin: Origin
) -> None:
    url = _unique(origin, "coffee.jpg")
    # The same URL in two products of one chunk (processed concurrently), and the same bytes
    # behind another URL (a redirect to it) in a third.
    rows = [(1, "A", url), (2, "B", url), (3, "C", _redirect_to(origin, url))]
    request_id = upload(api, sheet(rows), data={"profile": "storefront"}).json()["request_id"]
    status = wait_for_status(api, request_id)
    records = _images(status)
    assert all(r["status"] == "done" for r in records)
    assert sorted(r["reused"] or "" for r in records) == ["", "duplicate", "duplicate"]
    assert len({r["output_url"] for r in records}) == 1
    assert len({json.dumps(r["variants"], sort_keys=True) for r in records}) == 1


def test_concurrent_duplicates_claim_one_render_and_wait_for_it(
    stack: Stack, origin: Origin, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Eight products of one chunk, all at once, the same bytes behind eight URLs.
    token = uuid.uuid4().hex
    target = quote(f"/unique/coffee_4mp.jpg?t={token}", safe="")
    urls = [[origin.url(f"/redirect?to={target}&n={n}")] for n in range(8)]
    with isolated_runtime(stack, tmp_path_factory.mktemp("claims"), redis_number=13) as rt:
        request_id = seed_request(rt, urls, profile=storefront_profile(50))
        rt.run(dispatch_request(rt, request_id))
        rt.run(process_products(rt, request_id, list(range(1, 9))))
        record = rt.run(rt.requests.get(request_id))
        assert record is not None and record.status == RequestStatus.COMPLETED
        products = [rt.run(rt.products.get(request_id, s)) for s in range(1, 9)]
        outcomes = [p.images[0] for p in products if p is not None and p.images[0] is not None]
        assert len(outcomes) == 8
        assert sorted(o.reused or "" for o in outcomes) == ["", *["duplicate"] * 7]
        assert len({o.media_id for o in outcomes}) == 1
        assert rt.run(rt.media.holders(outcomes[0].media_id)) == [request_id]
        # One render wrote one set of objects: four variants, nothing else.
        # (The local store's .meta- files, its metadata beside each object, are not objects.)
        folder = rt.settings.media_dir / outcomes[0].media_id
        written = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert written == ["large.webp", "medium.webp", "original.jpg", "thumbnail.webp"]


def test_the_same_bytes_in_a_second_request_are_a_duplicate(
    api: httpx.Client, origin: Origin
) -> None:
    url = _unique(origin, "chelsea.jpg")
    first = upload(api, sheet([(1, "A", url)])).json()["request_id"]
    before = wait_for_status(api, first)["products"][0]["images"][0]
    # Another URL, the same bytes: not revalidated (never fetched), found by its sha256.
    second = upload(api, sheet([(1, "B", _redirect_to(origin, url))])).json()["request_id"]
    after = wait_for_status(api, second)["products"][0]["images"][0]
    assert before["reused"] is None
    assert after["reused"] == "duplicate"
    assert after["variants"] == before["variants"]
    assert after["source"] == before["source"]


def test_re_import_revalidates_and_a_304_reuses_the_outputs(
    stack: Stack, api: httpx.Client, origin: Origin
) -> None:
    urls = [_unique(origin, "rocket.jpg"), _unique(origin, "astronaut.jpg")]
    body = sheet([(1, "A", ",".join(urls))])
    first = wait_for_status(api, upload(api, body).json()["request_id"])
    paths = [_path(url) for url in urls]
    assert all(origin.not_modified.count(path) == 0 for path in paths)
    assert "if-none-match" not in _sent_headers(origin, paths[0])[0]

    second = wait_for_status(api, upload(api, body).json()["request_id"])
    again = second["products"][0]["images"]
    assert [image["reused"] for image in again] == ["not_modified", "not_modified"]
    assert [image["output_url"] for image in again] == first["products"][0]["output_image_urls"]
    assert [origin.not_modified.count(path) for path in paths] == [1, 1]
    revalidation = _sent_headers(origin, paths[0])[-1]
    assert revalidation["if-none-match"] == httpx.get(urls[0]).headers["etag"]
    assert "if-modified-since" in revalidation

    # The outputs are gone (a wiped store): the next import downloads unconditionally.
    key = first["products"][0]["output_image_urls"][0].split("/media/", 1)[1]
    shutil.rmtree((stack.data_dir / "media" / key).parent)
    third = wait_for_status(api, upload(api, body).json()["request_id"])
    redone = third["products"][0]["images"][0]
    assert redone["reused"] is None
    assert origin.not_modified.count(paths[0]) == 1
    assert httpx.get(redone["output_url"]).status_code == 200


def test_re_import_of_a_sheet_reuses_every_image_and_keeps_it_after_the_first_goes(
    api: httpx.Client, origin: Origin
) -> None:
    # Eight products of three images (one chunk), one URL twice in a product and once more in
    # another (the same bytes: rendered once, then duplicates).
    photos = ["rocket.jpg", "astronaut.jpg", "coffee.jpg", "chelsea.jpg"]
    rows = [
        (p, f"P{p}", ",".join(_unique(origin, photos[(p + i) % 4]) for i in range(3)))
        for p in range(1, 9)
    ]
    copy = _unique(origin, "rocket.jpg")
    rows[0] = (1, "P1", ",".join([copy, copy, rows[0][2].split(",")[2]]))
    rows[1] = (2, "P2", ",".join([copy, *rows[1][2].split(",")[1:]]))
    body = sheet(rows)
    first = wait_for_status(api, upload(api, body).json()["request_id"])
    assert (first["status"], first["images_done"], first["images_failed"]) == ("completed", 24, 0)
    assert sorted(r["reused"] or "" for r in _images(first)).count("duplicate") == 2

    second = wait_for_status(api, upload(api, body).json()["request_id"])
    assert (second["images_done"], second["images_failed"]) == (24, 0)
    assert [r["reused"] for r in _images(second)] == ["not_modified"] * 24
    outputs = [p["output_image_urls"] for p in second["products"]]
    assert outputs == [p["output_image_urls"] for p in first["products"]]

    # The second request holds every output it reused: they outlive the first request.
    assert api.delete(f"/api/requests/{first['request_id']}").status_code == 204
    for url in {url for urls in outputs for url in urls}:
        response, image = _decoded(url)
        assert response.status_code == 200 and image.format == "JPEG", url


def test_records_of_pending_images_say_so(api: httpx.Client, origin: Origin) -> None:
    slow = origin.url(f"/slow/logo_alpha.png?delay=2&t={uuid.uuid4().hex}")
    request_id = upload(api, sheet([(1, "Slow", slow)])).json()["request_id"]
    early = wait_for_status(api, request_id, ("in_progress",))
    assert early["products"][0]["images"] == [
        {
            "index": 0,
            "url": slow,
            "status": "pending",
            "output_url": None,
            "variants": {},
            "source": None,
            "exif": None,
            "dominant_color": None,
            "placeholder": None,
            "reused": None,
            "error": None,
            "warnings": [],
            "operations": [],
            "processing_ms": None,
        }
    ]
    lines = api.get(f"/api/requests/{request_id}/results").text.splitlines()
    assert json.loads(lines[0])["status"] == "pending"
    done = wait_for_status(api, request_id)
    assert done["products"][0]["images"][0]["operations"][:2] == ["decode", "flatten_alpha"]
    assert list(csv.reader(io.StringIO(api.get(f"/api/download/{request_id}").text)))[1][3]
