"""The worker's per-process runtime: the shared one plus the download client, the decode slot and
the download budget."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Self

import httpx
from redis.asyncio import Redis

from imgbatch.core.settings import Settings
from imgbatch.domain.runtime import Runtime, runtime
from imgbatch.worker.allocator import reuse_large_buffers
from imgbatch.worker.budget import DownloadBudget
from imgbatch.worker.downloads import DownloadPolicy, download_client


@dataclass
class WorkerRuntime(Runtime):
    _http: httpx.AsyncClient | None = field(default=None, init=False)
    _decode_slot: asyncio.Semaphore | None = field(default=None, init=False)
    _download_budget: DownloadBudget | None = field(default=None, init=False)
    _redis: Redis | None = field(default=None, init=False)

    @classmethod
    def build(cls, settings: Settings) -> Self:
        reuse_large_buffers()
        return super().build(settings)

    @property
    def download_policy(self) -> DownloadPolicy:
        return DownloadPolicy.from_settings(self.settings)

    @property
    def http(self) -> httpx.AsyncClient:
        # Created inside the loop's thread on first use: httpx binds its pool to the running loop.
        if self._http is None:
            self._http = download_client(self.download_policy)
        return self._http

    @property
    def redis(self) -> Redis:
        """The broker's Redis, for the reconciler's look at whether it lost its messages."""
        if self._redis is None:
            self._redis = Redis.from_url(self.settings.require_redis_url())
        return self._redis

    @property
    def decode_slot(self) -> asyncio.Semaphore:
        """One decode at a time per process: downloads overlap, full-size decodes do not.

        Three 16 MP decodes at once took a pool process to 345 MB (measured in bench/); the CPU
        gains nothing from it when there are at least as many processes as cores.
        """
        if self._decode_slot is None:
            self._decode_slot = asyncio.Semaphore(1)
        return self._decode_slot

    @property
    def download_budget(self) -> DownloadBudget:
        """Bytes of downloaded bodies this process may hold while they wait to be compressed."""
        if self._download_budget is None:
            self._download_budget = DownloadBudget(self.settings.download_budget_bytes)
        return self._download_budget

    async def aclose(self) -> None:
        """Close the clients this runtime opened (a worker's last one goes with its process; a
        runtime made for a while, as in tests, would leave their connections to the GC)."""
        if self._http is not None:
            await self._http.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        await self.client.close()


def build_runtime(settings: Settings) -> WorkerRuntime:
    return WorkerRuntime.build(settings)


def worker_runtime() -> WorkerRuntime:
    """This process's runtime, which the worker's app made a :class:`WorkerRuntime`."""
    current = runtime()
    assert isinstance(current, WorkerRuntime), "imgbatch.worker.app installs WorkerRuntime.build"
    return current
