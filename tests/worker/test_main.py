"""`python -m imgbatch.worker`, the command docker-compose's worker services run: its
concurrency comes from the settings, it consumes the queues its kind names, and, with a metrics
directory of its own and IMGBATCH_WORKER_METRICS_PORT, it serves the counts of its own pool
processes for Prometheus, which the API of another container could never read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import METRICS_DIR_ENV, Settings
from tests.conftest import STACK_ENV
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack

PHOTOS = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg"]


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Stack]:
    """MongoDB, Redis and the API of a stack, with no worker: the test starts its own."""
    api_port = free_port()
    stack = Stack(
        Settings(mongodb_url=None, redis_url=None),
        data_dir=tmp_path / "stack",
        api_port=api_port,
        extra_env={**STACK_ENV, "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}"},
    )
    try:
        stack.start_services()
        stack.start_api()
        stack.wait_healthy()
        yield stack
    finally:
        stack.stop()


def _scrape(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def _sample(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    assert found, f"{name}{{{labels}}} not in:\n{text}"
    return float(found.group(1))


def test_a_compose_worker_takes_its_concurrency_from_settings_and_serves_its_own_metrics(
    services: Stack, origin: Origin, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "worker-metrics"
    # What a restarted container finds: the last run's files, which must not be summed in.
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left from the last run")
    port = free_port()
    worker = services.spawn(
        "worker",
        ["-m", "imgbatch.worker", "images"],
        {
            METRICS_DIR_ENV: str(metrics_dir),
            "IMGBATCH_WORKER_METRICS_PORT": str(port),
            "IMGBATCH_WORKER_CONCURRENCY": "3",
        },
    )
    exporter = f"http://127.0.0.1:{port}/metrics"
    # The exporter starts once the worker is ready to take tasks: the health check's signal.
    wait_until(lambda: _scrape(exporter) is not None, timeout=90, what="the worker's /metrics")
    assert worker.poll() is None
    # It became Celery itself (exec): the pid the container signals is the worker's.
    assert "celery" in " ".join(psutil.Process(worker.pid).cmdline())
    assert len(psutil.Process(worker.pid).children()) == 3
    assert not (metrics_dir / "counter_999999.db").exists()

    body = sheet([(1, "Poster", ",".join(origin.url(f"/img/{name}") for name in PHOTOS))])
    with httpx.Client(base_url=services.api_url, timeout=30) as api:
        accepted = upload(api, body)
        assert accepted.status_code == 202, accepted.text
        status = wait_for_status(api, accepted.json()["request_id"])
        api_scrape = api.get("/metrics").text
    assert status["status"] == "completed"
    assert status["images_done"] == len(PHOTOS)

    scraped = _scrape(exporter)
    assert scraped is not None
    assert _sample(scraped, "imgbatch_images_total", 'code="",outcome="done"') == len(PHOTOS)
    # The API's own scrape reads its own directory: the worker's counts are not in it, which is
    # why each worker container is scraped by itself (docker/prometheus.yml).
    assert _sample(api_scrape, "imgbatch_images_total", 'code="",outcome="done"') == 0
