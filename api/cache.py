"""A small time-bounded cache for hot read endpoints (polled status)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

# How long a status answer is served from memory (see api/requests.py).
STATUS_CACHE_SECONDS = 1


class TTLCache(Generic[T]):
    """Entries live ``ttl`` seconds; the least recently used go first beyond ``max_entries``."""

    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[T]] = {}

    def get(self, key: Hashable) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``load()``'s; concurrent misses share one load.

        Without the sharing, every poll that arrives while the first one waits on a busy
        database misses too, and the database gets all of them at once (measured in bench/).
        """
        cached = self.get(key)
        if cached is not None:
            return cached
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a failure nobody shared is not reported
            raise
        else:
            self.put(key, value)
            future.set_result(value)
            return value
        finally:
            del self._loading[key]

    def put(self, key: Hashable, value: T) -> None:
        self._entries[key] = (time.monotonic() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def discard(self, prefix: Hashable) -> None:
        """Drop every entry whose key is a tuple starting with ``prefix``."""
        for key in [k for k in self._entries if isinstance(k, tuple) and k[0] == prefix]:
            del self._entries[key]
