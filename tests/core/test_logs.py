"""Structured logs from a real stack: every line of the API and the worker is one JSON object,
and every line about a request names it in ``request_id``."""

from __future__ import annotations

import json
import uuid

import httpx

from imgbatch.cli.stack import Stack
from tests.support.client import result_rows, sheet, upload, wait_for_status
from tests.support.logs import log_lines
from tests.support.origin import Origin


def test_every_line_is_json_and_lines_about_a_request_carry_its_id(
    json_stack: Stack, origin: Origin
) -> None:
    trace = f"trace-{uuid.uuid4().hex}"
    secret = f"ibk_never-logged-{uuid.uuid4().hex}"
    rows = [
        (1, "One", origin.url("/img/rocket.jpg")),
        (2, "Two", f"{origin.url('/img/coffee.jpg')}?token=hunter2"),
        (3, "Three", origin.url("/img/not_an_image.jpg")),
    ]
    with httpx.Client(base_url=json_stack.api_url, timeout=30) as api:
        accepted = upload(
            api, sheet(rows), headers={"X-Request-ID": trace, "Authorization": f"Bearer {secret}"}
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["x-request-id"] == trace
        request_id = accepted.json()["request_id"]
        assert wait_for_status(api, request_id)["status"] == "completed"
        assert len(result_rows(api, request_id)) == 4

    logs = json_stack.data_dir / "logs"
    about: dict[str, list[dict[str, object]]] = {"api": [], "worker": []}
    for name in about:
        for line in log_lines(logs / f"{name}.log"):
            event = json.loads(line)  # every line, not only ours: a raw line fails here
            assert {"event", "level", "logger", "timestamp", "pid"} <= event.keys(), line
            assert secret not in line and "hunter2" not in line
            if request_id in line:
                assert event.get("request_id") == request_id, line
                about[name].append(event)

    api_events = {e["event"] for e in about["api"]}
    assert {"request.accepted", "http.request"} <= api_events
    upload_line = next(e for e in about["api"] if e.get("route") == "/api/upload")
    assert upload_line["http_request_id"] == trace
    assert upload_line["status"] == 202
    worker_events = [str(e["event"]) for e in about["worker"]]
    # Celery's own lines too: the main process's "received", the pool process's "succeeded".
    assert any(
        e.startswith("Task imgbatch.process_products") and "received" in e for e in worker_events
    )
    assert any("succeeded" in e for e in worker_events)
    for ours in ("request.dispatched", "image.stored", "image.failed", "product.finished"):
        assert ours in worker_events, ours
    failed = next(e for e in about["worker"] if e["event"] == "image.failed")
    assert failed["code"] == "not_an_image"
    assert failed["url"] == origin.url("/img/not_an_image.jpg")
