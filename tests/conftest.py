"""Session fixtures: a real stack (MongoDB-protocol server, Redis, API, Celery worker), a real
loopback image origin serving the corpus and, for the tests that ask for it, a real S3 server
(SeaweedFS). Nothing of ours is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from imgbatch.cli.embedded import EmbeddedSeaweedFS, free_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.storage.buckets import ensure_bucket
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.inprocess import isolated_runtime
from tests.support.keys import new_key
from tests.support.listeners import Listener
from tests.support.logs import JSON_LOGS
from tests.support.origin import Origin
from tests.support.stacks import serving, side_api, sync_db

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


def pytest_addoption(parser: pytest.Parser) -> None:
    # `make fuzz` raises it; the suite's own run stays within its time (tests/api/test_fuzz.py).
    parser.addoption(
        "--fuzz-examples", default="4", help="examples per operation for the API fuzzer"
    )


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A TCP listener that a refused target must never reach (netguard, downloads)."""
    running = Listener()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    with Origin(CORPUS) as served:
        yield served


@contextmanager
def _serving(data_dir: Path, env: dict[str, str]) -> Iterator[Stack]:
    api_port = free_port()
    env = {**env, "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}"}
    settings = Settings(mongodb_url=None, redis_url=None, log_level="INFO")
    with serving(Stack(settings, data_dir=data_dir, api_port=api_port, extra_env=env)) as running:
        yield running


# A second API as deployed: keys required. Its event streams send a keep-alive comment every
# second and end after 5 s, so every client that watches through it (CLI, page) reconnects with
# Last-Event-ID a few times per request.
KEYED_ENV = {
    "IMGBATCH_AUTH_DISABLED": "false",
    "IMGBATCH_EVENTS_KEEPALIVE_SECONDS": "1",
    "IMGBATCH_EVENTS_MAX_SECONDS": "5",
}


@dataclass(frozen=True)
class KeyedApi:
    url: str
    key: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def keyed_api(stack: Stack) -> Iterator[KeyedApi]:
    with side_api(stack, "api-keyed", KEYED_ENV) as url:
        _, key = new_key(stack, "keyed-api")
        yield KeyedApi(url, key)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _serving(tmp_path_factory.mktemp("stack"), STACK_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def json_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, logging JSON, so its metrics (summed across every process) and its
    log files hold only what the tests that use it did."""
    env = {**STACK_ENV, **JSON_LOGS, "IMGBATCH_PRODUCTS_PER_TASK": "2"}
    with _serving(tmp_path_factory.mktemp("json-stack"), env) as running:
        yield running


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def mongo(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    with sync_db(stack) as db:
        yield db


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweedFS]:
    """One S3 server for the session, started only if a test asks for it (about 1 s), with
    its credentials in this process's AWS_* variables, as a deployment would have them."""
    with (
        EmbeddedSeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server,
        pytest.MonkeyPatch.context() as environment,
    ):
        for name, value in server.credentials_env().items():
            environment.setenv(name, value)
        yield server


@pytest.fixture(scope="session")
def s3_settings(seaweedfs: EmbeddedSeaweedFS) -> Settings:
    """Settings naming the session's S3 server and its bucket (created here). Tests share the
    bucket; every key they write is under their own request id or a fresh uuid."""
    settings = Settings(storage="s3", s3_endpoint_url=seaweedfs.url, s3_bucket="imgbatch-tests")
    ensure_bucket(settings)
    return settings


@pytest.fixture
def isolated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerRuntime]:
    """Worker and reconciler code run in this process on a database of its own."""
    with isolated_runtime(stack, tmp_path_factory.mktemp("isolated")) as rt:
        yield rt


# --- test lanes (`make test-fast` runs `-m "not stack"`) ------------------------------------
# A test is marked by what it uses, so a new test lands in the right lane by construction: any
# fixture that starts servers marks it `stack`; the fault tests and the browser test are stack
# tests too, with a marker of their own to select or skip them. A test that starts servers by
# itself (not through a fixture) carries `pytestmark = pytest.mark.stack`.
_SERVER_FIXTURES = frozenset(
    {"stack", "json_stack", "seaweedfs", "hooks_stack", "services", "fault_stack", "browser"}
)
_BROWSER_FIXTURES = frozenset({"browser"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if "faults" in item.path.parts:
            item.add_marker(pytest.mark.faults)
        if used & _BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        if used & _SERVER_FIXTURES or item.get_closest_marker("faults"):
            item.add_marker(pytest.mark.stack)
