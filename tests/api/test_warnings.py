"""Catalogue-quality warnings through the real stack: on each image record (status, results),
in the result CSV's ``Warnings`` column and counted by ``GET /api/stats``; never a failure."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image, ImageFilter

from imgbatch.cli.keys import create_key
from imgbatch.cli.stack import Stack
from tests.imaging.test_quality import product_shot
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.stacks import side_api

MARKETPLACE = {
    "marketplace": {
        "variants": [{"name": "main", "format": "jpeg", "quality": 85}],
        "checks": {"min_white_border": 0.9},
    }
}


@pytest.fixture(scope="module")
def marketplace_url(stack: Stack) -> Iterator[str]:
    env = {"IMGBATCH_AUTH_DISABLED": "false", "IMGBATCH_PROFILES": json.dumps(MARKETPLACE)}
    with side_api(stack, "api-warnings", env) as url:
        yield url


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_warnings_are_on_the_records_the_csv_and_the_stats(
    stack: Stack, marketplace_url: str, origin: Origin
) -> None:
    token = uuid.uuid4().hex
    on_white = product_shot((1000, 1000), "white")
    generated = {
        "sharp": on_white,
        "blurred": on_white.filter(ImageFilter.GaussianBlur(40)),
        "coloured": product_shot((1000, 1000), (200, 30, 30)),
        "tiny": product_shot((120, 90), "white"),
        "banner": product_shot((3000, 600), "white"),
    }
    url = {
        name: origin.put(f"{token}-{name}.jpg", _jpeg(image)) for name, image in generated.items()
    }
    url["coffee"] = origin.url(f"/unique/coffee_4mp.jpg?t={token}")
    url["chelsea"] = origin.url(f"/unique/chelsea.jpg?t={token}")
    expected = {
        "sharp": [],
        "blurred": ["blurry"],
        "coloured": ["not_white_background"],
        "tiny": ["too_small"],
        "banner": ["extreme_aspect"],
        "coffee": ["not_white_background"],
        "chelsea": ["too_small", "not_white_background"],
    }
    products = [["sharp", "blurred", "coloured"], ["tiny", "banner"], ["coffee", "chelsea"]]
    rows = [(n, f"P{n}", ",".join(url[i] for i in names)) for n, names in enumerate(products, 1)]

    _, key = asyncio.run(create_key(stack.settings_for_children(), f"warnings-{token[:8]}"))
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=marketplace_url, headers=headers, timeout=30) as api:
        listed = {p["name"]: p for p in api.get("/api/profiles").json()["profiles"]}
        assert listed["marketplace"]["checks"]["min_white_border"] == 0.9
        assert listed["marketplace"]["checks"]["min_long_edge"] == 800  # a default kept
        accepted = upload(api, sheet(rows), data={"profile": "marketplace"})
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        # The default profile does not ask for white: the same photo only warns of its size.
        plain = upload(api, sheet([(1, "Cat", url["chelsea"] + "&default")]))
        status = wait_for_status(api, request_id)
        plain_status = wait_for_status(api, plain.json()["request_id"])

        # A warning never fails an image.
        assert status["status"] == "completed"
        assert (status["images_done"], status["images_failed"]) == (7, 0)
        names = {u: n for n, u in url.items()}
        found = {
            names[image["url"]]: [w["code"] for w in image["warnings"]]
            for product in status["products"]
            for image in product["images"]
        }
        assert found == expected
        assert all(image["status"] == "done" for p in status["products"] for image in p["images"])
        blurry = status["products"][0]["images"][1]["warnings"][0]
        assert blurry["message"].startswith("sharpness ")
        cat = plain_status["products"][0]["images"][0]
        assert [w["code"] for w in cat["warnings"]] == ["too_small"]

        lines = api.get(f"/api/requests/{request_id}/results")
        records = [json.loads(line) for line in lines.text.splitlines()]
        assert {names[r["url"]]: [w["code"] for w in r["warnings"]] for r in records} == expected

        table = list(csv.reader(io.StringIO(api.get(f"/api/download/{request_id}").text)))
        assert table[0][-2:] == ["Errors", "Warnings"]
        in_csv: dict[str, list[str]] = {name: [] for name in expected}
        for row in table[1:]:
            assert row[-2] == ""  # no errors
            for pair in filter(None, row[-1].split("; ")):
                source, rest = pair.split(" -> ", 1)
                in_csv[names[source]].append(rest.split(":", 1)[0])
        assert in_csv == expected

        stats = api.get("/api/stats").json()
        counted = Counter(code for codes in expected.values() for code in codes)
        counted["too_small"] += 1  # the default-profile cat
        assert stats["warnings_24h"] == dict(counted)
