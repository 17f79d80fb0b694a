"""Per-process state of a task process: one event loop, one MongoDB client, the task sender and
the media store, shared by every task the process runs (worker and webhook tasks alike).

Prefork children must not inherit sockets from their parent, so the runtime is built lazily in
the process that first uses it and rebuilt if the pid changes. A worker with a thread pool (the
webhook worker: its tasks wait on the network) gets one runtime per thread, since an event loop
runs in one thread at a time. The worker installs a richer
factory (:mod:`worker.runtime` adds the download client), so both kinds of task get the same
object in one process.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pymongo import AsyncMongoClient

from imgbatch.core.settings import Settings, get_settings
from imgbatch.domain.events import RedisEventPublisher
from imgbatch.domain.services import Services
from imgbatch.domain.taskqueue import CeleryTaskSender
from imgbatch.models.db import Document, database, mongo_client
from imgbatch.storage import create_store

T = TypeVar("T")


@dataclass
class Runtime(Services):
    loop: asyncio.AbstractEventLoop
    client: AsyncMongoClient[Document]

    @classmethod
    def build(cls, settings: Settings) -> Self:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        client = mongo_client(settings)
        return cls(
            settings=settings,
            loop=loop,
            client=client,
            db=database(client, settings),
            tasks=CeleryTaskSender.from_settings(settings),
            store=create_store(settings),
            events=RedisEventPublisher.from_settings(settings),
        )

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)


_factory: Callable[[Settings], Runtime] = Runtime.build


class _PerThread(threading.local):
    runtime: Runtime | None = None
    pid: int | None = None


_current = _PerThread()


def install(factory: Callable[[Settings], Runtime]) -> None:
    """Choose what :func:`runtime` builds in this process (the worker's app does, at import)."""
    global _factory
    _factory = factory


def current_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's runtime's event loop, if it has one yet (for a diagnostic dump)."""
    current = _current.runtime
    return current.loop if current is not None and _current.pid == os.getpid() else None


def runtime() -> Runtime:
    """This process's (this thread's) runtime, built on first use after the fork."""
    if _current.runtime is None or _current.pid != os.getpid():
        _current.runtime = _factory(get_settings())
        _current.pid = os.getpid()
    return _current.runtime
