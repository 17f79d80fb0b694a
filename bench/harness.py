"""The real stack (``cli.stack.Stack``, as ``make run`` starts it) behind a loopback origin.

Helpers here upload sheets, wait for requests, restart workers with other settings and read
per-process CPU time and peak RSS (``VmHWM`` from ``/proc``: the kernel's exact high-water mark,
no sampling needed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the venv
from pymongo import MongoClient

from imgbatch.cli.embedded import free_port
from imgbatch.cli.keys import create_key
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from tests.support.origin import Origin

# As in tests/conftest.py: the origin is on loopback, which the address guard refuses. Auth
# stays on, as in production: every call the bench makes carries a key it creates.
# The address policy is running()'s ``private_networks``.
STACK_ENV = {
    "IMGBATCH_ALLOWED_PORTS": "[]",
}
_WORKER_READY_TIMEOUT = 180.0  # a worker starts in seconds, or minutes on a loaded machine


@dataclass
class Bench:
    stack: Stack
    origin: Origin
    client: httpx.Client
    api_key: str
    workers: dict[str, int] = field(default_factory=dict)
    _mongo: MongoClient[dict[str, Any]] | None = None

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def upload(
        self, body: bytes, name: str = "sheet.csv", *, profile: str = "default"
    ) -> dict[str, Any]:
        response = self.client.post(
            "/api/upload", files={"file": (name, body, "text/csv")}, data={"profile": profile}
        )
        if response.status_code != 202:
            raise RuntimeError(f"upload refused: {response.status_code} {response.text[:500]}")
        accepted: dict[str, Any] = response.json()
        return accepted

    def progress(self, request_id: str) -> dict[str, Any]:
        """The request document, read from MongoDB by ``_id``.

        Polling goes here, not through ``GET /api/status``: that endpoint sorts the request's
        products on every call (tens of ms of database CPU for a 2000-product request), so a
        poller on it would take CPU from the very batch being measured.
        """
        if self._mongo is None:
            assert self.stack.mongodb_url
            self._mongo = MongoClient(self.stack.mongodb_url, tz_aware=True)
        doc = self._mongo[self.stack.settings.mongodb_database]["requests"].find_one(
            {"_id": request_id}
        )
        if doc is None:
            raise LookupError(f"request {request_id} not found")
        return doc

    def products(self, request_id: str) -> list[dict[str, Any]]:
        """The request's product documents, read from MongoDB."""
        self.progress(request_id)  # connects
        assert self._mongo is not None
        collection = self._mongo[self.stack.settings.mongodb_database]["products"]
        return list(collection.find({"request_id": request_id}))

    def wait_done(self, request_id: str, timeout: float, poll: float = 0.25) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.progress(request_id)
            if doc["status"] in ("completed", "failed"):
                return doc
            if time.monotonic() > deadline:
                raise TimeoutError(f"{request_id} still {doc['status']} after {timeout:.0f}s")
            time.sleep(poll)

    def close(self) -> None:
        if self._mongo is not None:
            self._mongo.close()

    def start_worker(self, name: str, concurrency: int, env: dict[str, str]) -> psutil.Process:
        """A fresh worker (its pool children start with a clean peak RSS); waits until ready."""
        for old in list(self.workers):
            self.stack.stop_process(old)
            del self.workers[old]
        process = self.stack.start_worker(name, concurrency=concurrency, env=env)
        log = self.stack.data_dir / "logs" / f"{name}.log"
        deadline = time.monotonic() + _WORKER_READY_TIMEOUT
        while b" ready." not in (log.read_bytes() if log.exists() else b""):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start; see {log}")
            time.sleep(0.1)
        self.workers[name] = process.pid
        return psutil.Process(process.pid)

    def processes(self) -> dict[str, psutil.Process]:
        """Every process of the stack by role; worker pool children as ``worker-child-N``."""
        found: dict[str, psutil.Process] = {}
        for name, popen in self.stack.processes.items():
            if popen.poll() is None:
                found[name] = psutil.Process(popen.pid)
        for service in self.stack.services:
            if service.process is not None and service.process.poll() is None:
                found[service.name] = psutil.Process(service.process.pid)
        for name, pid in self.workers.items():
            for index, child in enumerate(psutil.Process(pid).children()):
                found[f"{name}-child-{index}"] = child
        if "api" in found:
            # The upload parser's forkserver (and multiprocessing's resource tracker): each
            # upload's parser process is its child, counted in its children's times once done.
            for index, child in enumerate(found["api"].children(recursive=True)):
                found[f"api-child-{index}"] = child
        return found


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    seconds = {}
    for name, process in processes.items():
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        # Children's times too: a process's reaped children (an upload's parser, a recycled
        # pool process) count for it, or their CPU would be lost between two readings.
        seconds[name] = times.user + times.system + times.children_user + times.children_system
    return seconds


@contextmanager
def running(
    workdir: Path,
    photos_root: Path,
    *,
    latency: float,
    jitter: float,
    bandwidth: int | None,
    beat: bool = True,
    private_networks: bool = True,
) -> Iterator[Bench]:
    """Origin, MongoDB, Redis, API and beat; workers come per phase. All stopped on exit.

    ``private_networks=False`` keeps the default address policy (the upload-time host check
    on): the stack can then fetch nothing from the loopback origin.
    """
    origin = Origin(photos_root, latency=latency, latency_jitter=jitter, bandwidth=bandwidth)
    api_port = free_port()
    env = {
        **STACK_ENV,
        "IMGBATCH_ALLOW_PRIVATE_NETWORKS": str(private_networks).lower(),
        "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
        # The events phase opens its 200 streams with the bench's one key: above the default
        # per-owner cap (20), which tests/api/test_stream_limits.py holds to its 429.
        "IMGBATCH_EVENTS_STREAMS_PER_OWNER": "1000",
    }
    # Unset URLs mean the embedded MongoDB-protocol server and redis-server, as `make run`.
    settings = Settings(mongodb_url=None, redis_url=None)
    stack = Stack(settings, data_dir=workdir, api_port=api_port, extra_env=env)
    client = httpx.Client(base_url=stack.api_url, timeout=120)
    try:
        stack.start_services()
        stack.start_api()
        if beat:
            stack.start_beat()
        stack.wait_healthy()
        reachable = settings.model_copy(update={"mongodb_url": stack.mongodb_url})
        _, api_key = asyncio.run(create_key(reachable, "bench"))
        client.headers["Authorization"] = f"Bearer {api_key}"
        bench = Bench(stack, origin, client, api_key)
        try:
            yield bench
        finally:
            bench.close()
    finally:
        client.close()
        stack.stop()
        origin.stop()
