"""The OpenAPI document (/docs) lists every endpoint with its response model and the error
bodies it can return: a table here is the contract, so a new route must be added to it."""

from __future__ import annotations

from typing import Any

import httpx

OWNED = {401, 404, 410}
EXPECTED_ERRORS: dict[tuple[str, str], set[int]] = {
    ("post", "/api/upload"): {400, 401, 409, 413, 422, 429},
    ("post", "/api/images"): {400, 401, 409, 413, 422, 429},
    ("get", "/api/images/{request_id}"): OWNED,
    ("get", "/api/profiles"): {401},
    ("get", "/api/status/{request_id}"): OWNED | {422},
    # 416: a Range past the end of the stored result file.
    ("get", "/api/download/{request_id}"): OWNED | {409, 416, 503},
    ("get", "/api/requests"): {401, 422},
    ("get", "/api/requests/{request_id}/events"): OWNED | {429, 503},
    ("get", "/api/requests/{request_id}/results"): OWNED | {416, 503},
    ("get", "/api/requests/{request_id}/audit"): OWNED,
    ("post", "/api/requests/{request_id}/retry"): OWNED | {409, 429},
    ("post", "/api/requests/{request_id}/cancel"): OWNED | {409},
    ("delete", "/api/requests/{request_id}"): {401, 404},
    ("get", "/api/stats"): {401},
    ("post", "/api/webhooks"): {400, 401, 409, 413, 422},
    ("get", "/api/webhooks"): {401},
    ("get", "/api/webhooks/{subscriber_id}"): {401, 404},
    ("delete", "/api/webhooks/{subscriber_id}"): {401, 404},
    ("post", "/api/webhooks/{subscriber_id}/rotate-secret"): {401, 404, 409},
    ("get", "/api/webhooks/{subscriber_id}/deliveries"): {401, 404, 422},
    ("post", "/api/webhooks/deliveries/{delivery_id}/redeliver"): {401, 404, 409},
    ("get", "/media/{key}"): {404, 503},
    ("get", "/api/health"): {503},
    ("get", "/metrics"): {401, 403},
}
# Bodies that are not JSON models: the result CSV, JSON Lines, images, Prometheus text, "no
# content".
NOT_JSON = {
    ("get", "/api/download/{request_id}"),
    ("get", "/api/requests/{request_id}/results"),
    ("get", "/api/requests/{request_id}/events"),
    ("get", "/media/{key}"),
    ("get", "/metrics"),
    ("delete", "/api/webhooks/{subscriber_id}"),
    ("delete", "/api/requests/{request_id}"),
}


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    return schema


def test_every_route_declares_its_model_and_its_errors(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == set(EXPECTED_ERRORS), "update EXPECTED_ERRORS with the new route"
    for key, operation in operations.items():
        responses = operation["responses"]
        errors = {int(code) for code in responses if int(code) >= 400}
        # FastAPI adds its own 422 to any route with parameters, even ones that cannot fail.
        assert EXPECTED_ERRORS[key] <= errors <= EXPECTED_ERRORS[key] | {422}, key
        for code in errors:
            body = responses[str(code)]
            assert body["description"], (key, code)
            schema = resolve(document, body["content"]["application/json"]["schema"])
            assert "detail" in schema["properties"], (key, code)
        # 206 is the same body in part (a Range on a stored result file), not a second answer.
        success = [code for code in responses if 200 <= int(code) < 300 and code != "206"]
        assert len(success) == 1, key
        if key not in NOT_JSON:
            schema = responses[success[0]]["content"]["application/json"]["schema"]
            assert schema.get("$ref") or schema.get("items", {}).get("$ref"), key


def test_docs_page_is_served(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
