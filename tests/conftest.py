"""Session fixtures: a real stack (MongoDB-protocol server, Redis, API, Celery worker) and a real
loopback image origin serving the corpus. Nothing of ours is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from cli.embedded import free_port
from cli.stack import Stack
from core.settings import Settings
from tests.support.inprocess import isolated_runtime
from tests.support.origin import Origin
from tests.support.stacks import sync_db
from worker.runtime import WorkerRuntime

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"

# The suite's stack talks to a loopback origin, so the address guard is switched off explicitly.
STACK_ENV = {
    "IMGBATCH_ALLOW_PRIVATE_NETWORKS": "true",
    "IMGBATCH_ALLOWED_PORTS": "[]",
    "IMGBATCH_DOWNLOAD_ATTEMPTS": "2",
    "IMGBATCH_DOWNLOAD_BACKOFF_INITIAL": "0.05",
    "IMGBATCH_DOWNLOAD_BACKOFF_MAX": "0.2",
    "IMGBATCH_DOWNLOAD_DEADLINE": "10",
    "IMGBATCH_AUTH_DISABLED": "true",
    "IMGBATCH_WORKER_CONCURRENCY": "2",
    # The suite uploads far more than a person would; limits get their own API in test_auth.py.
    "IMGBATCH_RATE_LIMIT_UPLOADS": "100000",
    "IMGBATCH_MAX_REQUESTS_IN_FLIGHT": "100000",
}


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    with Origin(CORPUS) as served:
        yield served


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    api_port = free_port()
    env = {**STACK_ENV, "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}"}
    settings = Settings(mongodb_url=None, redis_url=None, log_level="INFO")
    running = Stack(settings, data_dir=data_dir, api_port=api_port, extra_env=env)
    try:
        running.start_services()
        running.start_api()
        running.start_worker(concurrency=2)
        running.wait_healthy()
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def mongo(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    with sync_db(stack) as db:
        yield db


@pytest.fixture
def isolated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerRuntime]:
    """Worker and reconciler code run in this process on a database of its own."""
    with isolated_runtime(stack, tmp_path_factory.mktemp("isolated")) as rt:
        yield rt
