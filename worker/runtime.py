"""Per-process worker state: one event loop, one MongoDB client, one HTTP client.

Prefork children must not inherit sockets from their parent, so the runtime is built lazily in
the process that first uses it and rebuilt if the pid changes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from celery import Celery
from pymongo import AsyncMongoClient

from models.db import Database, Document, database, mongo_client
from models.media import MediaStore
from models.products import ProductRepository
from models.requests import RequestRepository
from models.settings import Settings, get_settings
from models.staging import StagedChunkRepository
from worker.allocator import reuse_large_buffers
from worker.app import celery_app
from worker.downloads import DownloadPolicy, download_client
from worker.queues import TaskQueue

T = TypeVar("T")


@dataclass
class WorkerRuntime:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    client: AsyncMongoClient[Document]
    db: Database
    queue: TaskQueue
    media: MediaStore
    download_policy: DownloadPolicy
    _http: httpx.AsyncClient | None = field(default=None, init=False)
    _decode_slot: asyncio.Semaphore | None = field(default=None, init=False)

    @property
    def requests(self) -> RequestRepository:
        return RequestRepository(self.db)

    @property
    def products(self) -> ProductRepository:
        return ProductRepository(self.db)

    @property
    def chunks(self) -> StagedChunkRepository:
        return StagedChunkRepository(self.db)

    @property
    def http(self) -> httpx.AsyncClient:
        # Created inside the loop's thread on first use: httpx binds its pool to the running loop.
        if self._http is None:
            self._http = download_client(self.download_policy)
        return self._http

    @property
    def decode_slot(self) -> asyncio.Semaphore:
        """One decode at a time per process: downloads overlap, full-size decodes do not.

        Three 16 MP decodes at once took a pool process to 345 MB (measured in bench/); the CPU
        gains nothing from it when there are at least as many processes as cores.
        """
        if self._decode_slot is None:
            self._decode_slot = asyncio.Semaphore(1)
        return self._decode_slot

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)


def build_runtime(settings: Settings, app: Celery) -> WorkerRuntime:
    reuse_large_buffers()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = mongo_client(settings)
    return WorkerRuntime(
        settings=settings,
        loop=loop,
        client=client,
        db=database(client, settings),
        queue=TaskQueue(app),
        media=MediaStore(settings.media_dir),
        download_policy=DownloadPolicy.from_settings(settings),
    )


_runtime: WorkerRuntime | None = None
_runtime_pid: int | None = None


def runtime() -> WorkerRuntime:
    """This process's runtime, built on first use after the fork."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = build_runtime(get_settings(), celery_app)
        _runtime_pid = os.getpid()
    return _runtime
