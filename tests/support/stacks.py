"""Stacks for tests: one serving an API and a worker, and extra processes beside a running
stack (another API or worker with different settings)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from pymongo import MongoClient
from pymongo.database import Database

from cli.embedded import free_port
from cli.stack import Stack
from core.settings import Settings
from worker.runtime import WorkerRuntime, build_runtime


def redis_db(stack: Stack, number: int) -> str:
    """The stack's Redis, another database: a queue there is consumed by no one else."""
    assert stack.redis_url
    return stack.redis_url.rsplit("/", 1)[0] + f"/{number}"


@contextmanager
def serving(stack: Stack, *, worker_concurrency: int = 2) -> Iterator[Stack]:
    """``stack`` with its data services (embedded where no URL is set), an API and a worker."""
    try:
        stack.start_services()
        stack.start_api()
        stack.start_worker(concurrency=worker_concurrency)
        stack.wait_healthy()
        yield stack
    finally:
        stack.stop()


@contextmanager
def side_api(
    stack: Stack, name: str, env: dict[str, str], *, worker_concurrency: int = 0
) -> Iterator[str]:
    """An API process (and optionally a worker) on the stack's services with ``env`` on top."""
    port = free_port()
    stack.start_api(name, port=port, env=env)
    if worker_concurrency:
        stack.start_worker(f"{name}-worker", concurrency=worker_concurrency, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_healthy(api_url=url)
        yield url
    finally:
        stack.stop_process(name)
        stack.stop_process(f"{name}-worker")


@contextmanager
def sync_db(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    assert stack.mongodb_url
    client: MongoClient[dict[str, Any]] = MongoClient(
        stack.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=20000
    )
    try:
        yield client["imgbatch"]
    finally:
        client.close()


@contextmanager
def isolated_runtime(stack: Stack, data_dir: Path, redis_number: int) -> Iterator[WorkerRuntime]:
    """Worker code in the test process, on a database and Redis database of its own, so no
    other worker consumes what it enqueues and its documents are its own."""
    assert stack.redis_url
    redis_url = redis_db(stack, redis_number)
    settings = Settings(
        mongodb_url=stack.mongodb_url,
        mongodb_database=f"race_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        data_dir=data_dir,
        allow_private_networks=True,
        allowed_ports=[],
    )
    rt = build_runtime(settings)
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    try:
        yield rt
    finally:
        broker.flushdb()
        rt.run(rt.client.drop_database(settings.mongodb_database))
        rt.run(rt.client.close())
        rt.loop.close()


def non_loopback_address() -> str:
    """An address of this machine that is not loopback: connecting to it, we are not local."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the interface
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "this machine needs a non-loopback interface"
    return address
