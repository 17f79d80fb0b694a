"""GET /metrics against a real stack: every counter, summed over the worker's pool processes and
every API process, equals what status reports; and who may scrape it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack
from tests.conftest import CORPUS
from tests.support.client import sheet, upload, wait_for_status
from tests.support.logs import log_events
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.stacks import non_loopback_address, side_api, sync_db

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: httpx.Client, **headers: str) -> Samples:
    response = api.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture(scope="module")
def latent_origin() -> Iterator[Origin]:
    # A little latency, so the batch's tasks overlap and both pool processes take some.
    with Origin(CORPUS, latency=0.03) as served:
        yield served


def test_counters_summed_across_processes_equal_what_status_reports(
    json_stack: Stack, latent_origin: Origin
) -> None:
    good, not_image, missing = (
        latent_origin.url(path)
        for path in ("/img/chelsea.jpg", "/img/not_an_image.jpg", "/img/missing.jpg")
    )
    rows = [(i, f"SKU{i}", ",".join([good, not_image, missing])) for i in range(1, 31)]
    with (
        Receiver() as receiver,
        httpx.Client(base_url=json_stack.api_url, timeout=30) as api,
        side_api(json_stack, "api-2", {}) as second_url,
        httpx.Client(base_url=second_url, timeout=30) as api2,
    ):
        accepted = upload(api, sheet(rows), data={"webhook_url": receiver.url("/hook")})
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        assert wait_for_status(api, request_id)["status"] == "completed"
        receiver.wait_for(1, "/hook")

        with sync_db(json_stack) as db:
            # Every request of this stack, whichever test made it: the counters are global.
            requests = list(db.requests.find({}))
            products = list(db.products.find({}))
            _wait_until(lambda: db.webhook_deliveries.count_documents({"state": "pending"}) == 0)
            delivered = db.webhook_deliveries.count_documents({"state": "delivered"})
        images = sum(r["images_total"] for r in requests)
        images_done = sum(r["images_done"] for r in requests)
        # What status shows as reused: the same bytes done before ("duplicate"; every row has
        # the same photo) or a 304 ("not_modified").
        images_reused = sum(1 for p in products for i in p.get("images", []) if i and i["reused"])
        failed_by_code = Counter(e["code"] for p in products for e in p["errors"])
        assert all(r["status"] == "completed" for r in requests)
        assert images_done > 0 and failed_by_code["not_an_image"] and failed_by_code["http_error"]
        # 30 rows, one photo: rendered at most once per pool process (the stack runs two).
        assert images_reused >= 28

        # A product's counters move a moment before its metrics, in another process: wait
        # until every image is counted, then every figure must be exact.
        samples = _wait_for(
            lambda: scrape(api),
            lambda s: total(s, "imgbatch_images_total") >= images,
        )
        done = value(samples, "imgbatch_images_total", outcome="done", code="")
        assert done == images_done - images_reused
        assert value(samples, "imgbatch_images_total", outcome="reused", code="") == images_reused
        assert total(samples, "imgbatch_images_total", outcome="failed") == sum(
            r["images_failed"] for r in requests
        )
        for code, count in failed_by_code.items():
            assert value(samples, "imgbatch_images_total", outcome="failed", code=code) == count
        assert value(samples, "imgbatch_requests_total", status="completed") == len(requests)
        assert value(samples, "imgbatch_requests_total", status="failed") == 0
        assert value(samples, "imgbatch_requests_in_progress") == 0
        for queue in ("imgbatch.dispatch", "imgbatch.images", "imgbatch.webhooks"):
            assert value(samples, "imgbatch_queue_depth", queue=queue) == 0
        assert value(samples, "imgbatch_scrape_source_up", source="redis") == 1
        assert value(samples, "imgbatch_webhook_deliveries_total", outcome="delivered") == delivered
        assert value(samples, "imgbatch_webhook_deliveries_total", outcome="failed") == 0

        # Bytes: every body that downloaded (an image or not; a 304 has none), and every stored
        # output. Later chunks of the batch revalidate the photo an earlier one recorded.
        sizes = {
            url: (CORPUS / url.rsplit("/", 1)[1]).stat().st_size
            for url in {u for p in products for u in p["input_image_urls"]}
            if (CORPUS / url.rsplit("/", 1)[1]).exists()
        }
        downloaded = sum(
            sizes.get(url, 0)
            for p in products
            for url, image in zip(p["input_image_urls"], p["images"], strict=True)
            if not (image and image["reused"] == "not_modified")
        )
        assert value(samples, "imgbatch_download_bytes_total") == downloaded
        # Outputs are content-addressed: each distinct output once, however many images use it.
        media = json_stack.data_dir / "media"
        keys = {k for p in products for k in p["output_keys"] if k}
        stored = sum((media / k).stat().st_size for k in keys)
        assert value(samples, "imgbatch_output_bytes_total", format="jpeg") == stored
        assert value(samples, "imgbatch_output_bytes_total", format="webp") == 0
        # Phases: each image downloads once (a duplicate is known by its bytes); decode, encode
        # and store once per render. Images done and not reused were rendered; two pool
        # processes that meet the same new bytes at the same instant may both render them (the
        # second is then recorded as a duplicate, docs/profiles-and-outputs.md, "Reuse").
        phases = {
            phase: value(samples, "imgbatch_image_phase_seconds_count", phase=phase)
            for phase in ("download", "decode", "encode", "store")
        }
        assert phases["download"] == images
        assert phases["decode"] == phases["encode"] == phases["store"]
        assert done <= phases["decode"] <= images_done

        # The batch was shared by at least two pool processes (the counters above sum them).
        pids = {
            e["pid"]
            for e in log_events(json_stack.data_dir / "logs" / "worker.log")
            if e["event"] == "product.finished" and e.get("request_id") == request_id
        }
        assert len(pids) >= 2, pids

        # HTTP: requests served by either API process are counted together, by route template.
        route = {"method": "GET", "route": "/api/status/{request_id}", "status": "200"}
        before = value(scrape(api2), "imgbatch_http_request_duration_seconds_count", **route)
        for client in (api, api2, api2):
            assert client.get(f"/api/status/{request_id}").status_code == 200
        after = scrape(api)
        assert value(after, "imgbatch_http_request_duration_seconds_count", **route) == before + 3
        assert not any(request_id in dict(labels).get("route", "") for _, labels in after)


def test_metrics_need_the_token_when_one_is_set(stack: Stack) -> None:
    with (
        side_api(stack, "api-metrics-token", {"IMGBATCH_METRICS_TOKEN": "s3cret-scrape"}) as url,
        httpx.Client(base_url=url, timeout=30) as api,
    ):
        missing = api.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert api.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        samples = scrape(api, Authorization="Bearer s3cret-scrape")
        assert ("imgbatch_images_total", frozenset({"outcome": "done", "code": ""}.items())) in (
            samples
        )


def test_without_a_token_metrics_are_served_to_this_host_only(stack: Stack) -> None:
    address = non_loopback_address()
    port = free_port()
    stack.start_api("api-public", port=port, host="0.0.0.0")
    try:
        stack.wait_healthy(api_url=f"http://127.0.0.1:{port}")
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        remote = httpx.get(f"http://{address}:{port}/metrics")
        assert remote.status_code == 403
        assert "IMGBATCH_METRICS_TOKEN" in remote.json()["detail"]
    finally:
        stack.stop_process("api-public")


def _wait_until(condition: Any, timeout: float = 60.0) -> None:
    _wait_for(lambda: None, lambda _: condition(), timeout)


def _wait_for(read: Any, done: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        current = read()
        if done(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.2)
