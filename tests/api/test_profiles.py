"""GET /api/profiles, operator profiles from IMGBATCH_PROFILES, and the per-request snapshot."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import httpx
from PIL import Image
from pymongo.database import Database

from imgbatch.cli.stack import Stack
from tests.support.client import result_rows, sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.stacks import side_api

OPERATOR = {
    "catalog": [
        {"name": "icon", "format": "png", "max_edge": 32},
        {"name": "card", "format": "avif", "quality": 50, "max_edge": 200},
    ]
}


def test_the_built_in_profiles_are_listed(api: httpx.Client) -> None:
    listed = api.get("/api/profiles")
    assert listed.status_code == 200
    body = listed.json()
    assert body["default"] == "default"
    profiles = {p["name"]: p for p in body["profiles"]}
    assert profiles["default"] == {
        "name": "default",
        "builtin": True,
        "variants": [{"name": "original", "format": "jpeg", "quality": 50, "max_edge": None}],
        "checks": {
            "min_long_edge": 800,
            "min_sharpness": 100.0,
            "max_aspect": 3.0,
            "min_white_border": None,
        },
    }
    storefront = profiles["storefront"]["variants"]
    assert [(v["name"], v["format"], v["max_edge"]) for v in storefront] == [
        ("original", "jpeg", None),
        ("thumbnail", "webp", 150),
        ("medium", "webp", 600),
        ("large", "webp", 1200),
    ]


def test_an_operator_profile_is_listed_used_and_snapshotted(
    stack: Stack, origin: Origin, mongo: Database[dict[str, Any]]
) -> None:
    # Only this API knows "catalog"; the suite's worker, which runs the request, does not: it
    # renders from the snapshot the request carries.
    env = {"IMGBATCH_PROFILES": json.dumps(OPERATOR)}
    with side_api(stack, "api-profiles", env) as url, httpx.Client(base_url=url) as client:
        names = [p["name"] for p in client.get("/api/profiles").json()["profiles"]]
        assert names == ["default", "storefront", "catalog"]
        source = origin.url(f"/unique/hubble_deep_field.jpg?t={uuid.uuid4().hex}")
        accepted = upload(client, sheet([(1, "Galaxy", source)]), data={"profile": "catalog"})
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        status = wait_for_status(client, request_id)
        rows = result_rows(client, request_id)
    stored = mongo["requests"].find_one({"_id": request_id})
    assert stored["profile"]["name"] == "catalog"
    assert [v["name"] for v in stored["profile"]["variants"]] == ["icon", "card"]

    image = status["products"][0]["images"][0]
    # The first variant is the primary: its URL is the output URL.
    assert status["products"][0]["output_image_urls"] == [image["variants"]["icon"]["url"]]
    for name, fmt, size in (("icon", "PNG", (32, 28)), ("card", "AVIF", (200, 174))):
        with Image.open(io.BytesIO(httpx.get(image["variants"][name]["url"]).content)) as out:
            assert (out.format, out.size) == (fmt, size), name
    assert rows[0][3:] == ["Output Image Urls", "Card Image Urls", "Errors", "Warnings"]
    assert rows[1][4] == image["variants"]["card"]["url"]


def test_a_bad_operator_profile_stops_the_api(stack: Stack) -> None:
    env = {"IMGBATCH_PROFILES": json.dumps({"default": [{"name": "x", "format": "png"}]})}
    process = stack.start_api("api-bad-profiles", port=0, env=env)
    try:
        assert process.wait(timeout=60) != 0
    finally:
        stack.stop_process("api-bad-profiles")
    log = (stack.data_dir / "logs" / "api-bad-profiles.log").read_text()
    assert "cannot redefine the built-in profile 'default'" in log
