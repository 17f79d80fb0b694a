"""A stack of its own per webhook test module: beat running, a retry schedule in seconds, and
webhooks on a dedicated worker (as in a deployment), so a hanging receiver can be shown not to
hold up image processing. Receivers are real HTTP servers on 127.0.0.1 (tests/support/receiver.py).
In-process tests only need the data services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.domain.taskqueue import DISPATCH_QUEUE, IMAGES_QUEUE, MAINTENANCE_QUEUE
from tests.conftest import STACK_ENV
from tests.support.stacks import sync_db
from tests.webhooks.helpers import RETRY_SCHEDULE, WEBHOOK_TIMEOUT, Runtime

WEBHOOK_ENV = {
    **STACK_ENV,
    "IMGBATCH_WEBHOOK_RETRY_SCHEDULE": str(RETRY_SCHEDULE),
    "IMGBATCH_WEBHOOK_POLL_INTERVAL_SECONDS": "0.5",
    "IMGBATCH_WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT),
}


@pytest.fixture(scope="module")
def hooks_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("hooks-stack")
    api_port = free_port()
    env = {**WEBHOOK_ENV, "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}"}
    settings = Settings(mongodb_url=None, redis_url=None, log_level="INFO")
    running = Stack(settings, data_dir=data_dir, api_port=api_port, extra_env=env)
    try:
        running.start_services()
        running.start_api()
        running.start_worker(
            "worker", concurrency=2, queues=(DISPATCH_QUEUE, IMAGES_QUEUE, MAINTENANCE_QUEUE)
        )
        running.start_webhook_worker("webhooks")
        running.start_beat()
        running.wait_healthy()
        yield running
    finally:
        running.stop()


@pytest.fixture
def hooks_api(hooks_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hooks_stack.api_url, timeout=30) as client:
        # Every test starts with no subscribers: a completed request is fanned out to all of the
        # owner's subscribers, and one test's must not receive another's events.
        for subscriber in client.get("/api/webhooks").json():
            client.delete(f"/api/webhooks/{subscriber['id']}")
        yield client


@pytest.fixture(scope="module")
def hooks_db(hooks_stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    with sync_db(hooks_stack) as db:
        yield db


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """MongoDB and Redis only."""
    settings = Settings(mongodb_url=None, redis_url=None)
    running = Stack(settings, data_dir=tmp_path_factory.mktemp("hooks-services"))
    try:
        running.start_services()
        yield running
    finally:
        running.stop()


@pytest.fixture
def isolated(services: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A worker runtime in this process, on its own database and Redis database, so nothing else
    consumes what it enqueues. ``settings`` overrides are applied with ``isolated.configure``."""
    runtime = Runtime(services, tmp_path_factory)
    try:
        yield runtime
    finally:
        runtime.close()
