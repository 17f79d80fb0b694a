"""GET /api/status and /api/download: 404, 409 while running, pagination and the result CSV."""

from __future__ import annotations

import httpx

from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin


def test_unknown_request_ids_get_404_json(api: httpx.Client) -> None:
    for path in ("/api/status/nope", "/api/download/nope"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "request nope not found"}


def test_download_is_409_until_completed_then_200(api: httpx.Client, origin: Origin) -> None:
    slow = origin.url("/slow/chelsea.jpg?delay=2")
    accepted = upload(api, sheet([(1, "Slow", slow)]))
    request_id = accepted.json()["request_id"]
    early = api.get(f"/api/download/{request_id}")
    assert early.status_code == 409
    assert early.json()["detail"]["status"] in ("pending", "in_progress")
    wait_for_status(api, request_id)
    assert api.get(f"/api/download/{request_id}").status_code == 200


def test_products_are_paged_in_input_order(api: httpx.Client, origin: Origin) -> None:
    url = origin.url("/img/rocket.jpg")
    serials = [7, 3, 9, 1, 5]
    accepted = upload(api, sheet([(s, f"P{s}", url) for s in serials]))
    request_id = accepted.json()["request_id"]
    wait_for_status(api, request_id)

    first = api.get(f"/api/status/{request_id}", params={"offset": 0, "limit": 2}).json()
    second = api.get(f"/api/status/{request_id}", params={"offset": 2, "limit": 2}).json()
    rest = api.get(f"/api/status/{request_id}", params={"offset": 4}).json()
    assert [p["serial_number"] for p in first["products"]] == [7, 3]
    assert [p["serial_number"] for p in second["products"]] == [9, 1]
    assert [p["serial_number"] for p in rest["products"]] == [5]
    assert first["products_total"] == 5
    assert api.get(f"/api/status/{request_id}", params={"limit": 1001}).status_code == 422
    assert api.get(f"/api/status/{request_id}", params={"offset": -1}).status_code == 422


def test_output_images_are_served_and_paths_cannot_escape(
    api: httpx.Client, origin: Origin
) -> None:
    accepted = upload(api, sheet([(1, "One", origin.url("/img/coffee.jpg"))]))
    status = wait_for_status(api, accepted.json()["request_id"])
    output = status["products"][0]["output_image_urls"][0]
    assert output.startswith(f"{api.base_url}/media/".replace("//media", "/media"))
    assert httpx.get(output).content[:3] == b"\xff\xd8\xff"
    assert api.get("/media/../../etc/passwd").status_code == 404
    assert api.get("/media/nope/1/0.jpg").status_code == 404
