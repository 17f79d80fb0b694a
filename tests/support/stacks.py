"""Stacks for tests: one serving an API and a worker, and extra processes beside a running
stack (another API or worker with different settings)."""

from __future__ import annotations

import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack


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
    stack: Stack,
    name: str,
    env: dict[str, str],
    *,
    worker_concurrency: int = 0,
    beat: bool = False,
) -> Iterator[str]:
    """An API process (and optionally a worker and beat) on the stack's services with ``env``
    on top. Give it a database and Redis database of its own (:func:`own_data`) when it has a
    worker or beat, so that they work on its requests only."""
    port = free_port()
    stack.start_api(name, port=port, env=env)
    if worker_concurrency:
        stack.start_worker(f"{name}-worker", concurrency=worker_concurrency, env=env)
    if beat:
        stack.start_beat(f"{name}-beat", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_healthy(api_url=url)
        yield url
    finally:
        for process in (name, f"{name}-worker", f"{name}-beat"):
            stack.stop_process(process)


def own_data(stack: Stack, redis_number: int) -> dict[str, str]:
    """Settings that give side processes a MongoDB database and a Redis database of their own."""
    return {
        "IMGBATCH_MONGODB_DATABASE": f"side_{uuid.uuid4().hex[:8]}",
        "IMGBATCH_REDIS_URL": redis_db(stack, redis_number),
    }


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


def non_loopback_address() -> str:
    """An address of this machine that is not loopback: connecting to it, we are not local."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the interface
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "this machine needs a non-loopback interface"
    return address


def sigterm_and_wait(process: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    """Stop an ``imgbatch`` command as an operator would, SIGKILL only if it hangs: a SIGKILL
    first would leave the children of ``imgbatch run`` running."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
