"""Session fixtures: a real stack (MongoDB-protocol server, Redis, API, Celery worker) and a real
loopback image origin serving the corpus. Nothing of ours is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from cli.stack import Stack
from tests.support.logs import JSON_LOGS
from tests.support.origin import Origin
from tests.support.stacks import started_stack, sync_db

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
    with started_stack(tmp_path_factory.mktemp("stack"), STACK_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def json_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, logging JSON, so its metrics (summed across every process) and its
    log files hold only what the tests that use it did."""
    env = {**STACK_ENV, **JSON_LOGS, "IMGBATCH_PRODUCTS_PER_TASK": "2"}
    with started_stack(tmp_path_factory.mktemp("json-stack"), env) as running:
        yield running


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def mongo(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    with sync_db(stack) as db:
        yield db
