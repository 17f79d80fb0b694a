"""Task code run in the test process: a worker runtime on its own database and Redis database.

Nothing else consumes what it enqueues, so its queues can be counted, and the domain functions
of the worker and the reconciler can be driven step by step in an exact interleaving.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.worker.runtime import WorkerRuntime, build_runtime
from tests.support.stacks import redis_db
from tests.support.waiting import messages_waiting


@contextmanager
def isolated_runtime(
    stack: Stack,
    data_dir: Path,
    *,
    redis_number: int = 14,
    mongodb_url: str | None = None,
    **overrides: Any,
) -> Iterator[WorkerRuntime]:
    """A runtime on a database of its own: on the stack's server, or on ``mongodb_url`` (a
    server of the caller's, which it throws away whole: dropping a database of many documents
    takes SecantusDB longer than writing them)."""
    redis_url = redis_db(stack, redis_number)
    settings = Settings(
        mongodb_url=mongodb_url or stack.mongodb_url,
        mongodb_database=f"race_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        data_dir=data_dir,
        allow_private_networks=True,
        allowed_ports=[],
        **overrides,
    )
    rt = build_runtime(settings)
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    try:
        yield rt
    finally:
        broker.flushdb()
        if mongodb_url is None:
            rt.run(rt.client.drop_database(settings.mongodb_database))
        rt.run(rt.aclose())
        rt.loop.close()


def queue_length(rt: WorkerRuntime, queue: str) -> int:
    assert rt.settings.redis_url
    return messages_waiting(redis.Redis.from_url(rt.settings.redis_url), queue)
