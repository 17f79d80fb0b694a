"""The error bodies each route declares in the OpenAPI document (``/docs``).

Every error is ``{"detail": ...}`` from one exception handler; each error class provides its
schema (:meth:`core.errors.ImgbatchError.schema`), and a route lists the ones it can answer
with ``responses=errors(...)``. tests/api/test_docs.py checks every route against its list.
"""

from __future__ import annotations

from typing import Any

from imgbatch.api.auth import Unauthorized
from imgbatch.core.errors import BadRequest, Gone, ImgbatchError, NotFound, PayloadTooLarge


def errors(*classes: type[ImgbatchError]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer with these errors."""
    return {
        cls.status_code: {"model": cls.schema(), "description": cls.docs_description()}
        for cls in classes
    }


# Reading one of the caller's requests: no key, someone else's or unknown, expired.
OWNED_REQUEST = (Unauthorized, NotFound, Gone)
# Any route that reads a body: one that does not parse (Starlette's own 400), or past its cap.
WITH_BODY = (BadRequest, PayloadTooLarge)


# OpenAPI links: which later calls an answer's ids feed (Swagger UI shows them; API fuzzers
# and generated clients follow them from a new request to its status, stream and results).
# (method, path, status) of the answer -> (where the id is in its body, the operations it feeds).
_REQUEST_PAGES = (
    ("get", "/api/status/{request_id}"),
    ("get", "/api/requests/{request_id}/events"),
    ("get", "/api/requests/{request_id}/results"),
    ("get", "/api/requests/{request_id}/audit"),
    ("get", "/api/download/{request_id}"),
    ("post", "/api/requests/{request_id}/retry"),
    ("post", "/api/requests/{request_id}/cancel"),
)
_SUBSCRIBER_PAGES = (
    ("get", "/api/webhooks/{subscriber_id}"),
    ("get", "/api/webhooks/{subscriber_id}/deliveries"),
    ("post", "/api/webhooks/{subscriber_id}/rotate-secret"),
    ("delete", "/api/webhooks/{subscriber_id}"),
)
_LINKS: dict[tuple[str, str, str], tuple[str, str, tuple[tuple[str, str], ...]]] = {
    ("post", "/api/upload", "202"): ("request_id", "/request_id", _REQUEST_PAGES),
    ("post", "/api/images", "202"): (
        "request_id",
        "/request_id",
        (("get", "/api/images/{request_id}"), *_REQUEST_PAGES),
    ),
    ("get", "/api/requests", "200"): ("request_id", "/requests/0/request_id", _REQUEST_PAGES),
    ("post", "/api/webhooks", "201"): ("subscriber_id", "/id", _SUBSCRIBER_PAGES),
    ("get", "/api/webhooks", "200"): ("subscriber_id", "/0/id", _SUBSCRIBER_PAGES),
    ("get", "/api/webhooks/{subscriber_id}/deliveries", "200"): (
        "delivery_id",
        "/0/id",
        (("post", "/api/webhooks/deliveries/{delivery_id}/redeliver"),),
    ),
}


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (FastAPI's document) with the :data:`_LINKS` between its operations."""
    paths = schema.get("paths", {})
    for (method, path, status), (parameter, pointer, targets) in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target_method, target_path in targets:
            target = paths.get(target_path, {}).get(target_method)
            if target is None:
                continue
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": {parameter: f"$response.body#{pointer}"},
            }
    return schema
