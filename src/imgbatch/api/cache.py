"""A small time-bounded cache for hot reads: polled status answers and API key lookups."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

# How much longer it may be served while a refresh is in flight, or failing.
STATUS_STALE_SECONDS = 5
# The rendered status answers one API process keeps: a few dozen of the largest pages.
STATUS_CACHE_BYTES = 32 * 1024 * 1024


class TTLCache(Generic[T]):
    """Entries are fresh for ``ttl`` seconds, then served stale for up to ``stale_for`` more
    while one background load refreshes them; the least recently used go first beyond
    ``max_entries`` or, with ``weigh``, beyond ``max_weight`` (a status page of 1,000
    products renders to ~1 MB: 4,096 of them would be gigabytes). Entries too old to serve
    are dropped as new ones come in, not only when their key is asked for again (measured:
    reading every page of a 50,000-product request once left 68 MB behind, bench/README.md).

    An entry's age counts from when its load *started*: whatever the load read may have changed
    the moment after, so "fresh for ``ttl``" must not be stretched by the load's own latency
    (API keys: a revoked key is refused at most ``ttl`` after the revocation).

    With ``refresh_ahead``, a caller that finds an entry that fresh for less than that long
    starts one background load and gets the entry at once: a key in steady use is then never
    waited for, yet never served past ``ttl`` (the API key cache, which is never served stale:
    without this, every poll that came in while the key was read again each second waited on a
    database the workers kept busy, and those were the status p99, bench/notes/reads.md).
    """

    def __init__(
        self,
        ttl: float,
        *,
        stale_for: float = 0.0,
        max_entries: int = 4096,
        weigh: Callable[[T], int] | None = None,
        max_weight: int = 0,
        refresh_ahead: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._refresh_ahead = refresh_ahead
        self._clock = clock  # a test moves its own clock instead of sleeping
        self._stale_for = stale_for
        self._max = max_entries
        self._weigh = weigh
        self._max_weight = max_weight
        self._weight = 0
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        # The load in flight per key. discard() drops a key's from here, so a load that started
        # before it answers its own callers but stores nothing and is shared with no one else.
        self._loading: dict[Hashable, asyncio.Future[T]] = {}
        self._refreshes: set[asyncio.Task[T]] = set()

    def get(self, key: Hashable) -> T | None:
        """The fresh value, or None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``load()``'s; concurrent misses share one load.

        Without the sharing, every poll that arrives while the first one waits on a busy
        database misses too, and the database gets all of them at once. Serving the stale
        value during a refresh means no poll waits on the database once a key is warm: at
        200 polls/s, the few that arrived during each second's reload were the p99 (bench/).
        """
        entry = self._entries.get(key)
        if entry is not None:
            fresh_until, value = entry
            now = self._clock()
            if now < fresh_until:
                self._entries.move_to_end(key)
                if now >= fresh_until - self._refresh_ahead:
                    self._refresh(key, load)
                return value
            if now < fresh_until + self._stale_for:
                self._refresh(key, load)
                return value
            self._drop(key)
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._load(key, load, self._start(key))

    def _refresh(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> None:
        if key in self._loading:
            return
        # Registered before the task first runs, so callers in this same tick see it.
        future = self._start(key)
        task = asyncio.get_running_loop().create_task(self._load(key, load, future))
        self._refreshes.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[T]) -> None:
        self._refreshes.discard(task)
        if not task.cancelled():
            # A failed refresh leaves the stale value until it ages out; the next load after
            # that reports the error to its caller.
            task.exception()

    def _start(self, key: Hashable) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        return future

    async def _load(
        self,
        key: Hashable,
        load: Callable[[], Awaitable[T]],
        future: asyncio.Future[T],
    ) -> T:
        started = self._clock()
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a failure nobody shared is not reported
            raise
        else:
            if self._loading.get(key) is future:  # not discarded meanwhile
                self._store(key, value, started)
            future.set_result(value)
            return value
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]

    def loading(self, key: Hashable) -> bool:
        """Whether a load of ``key`` is in flight (a miss's, or a background refresh)."""
        return key in self._loading

    def put(self, key: Hashable, value: T) -> None:
        self._store(key, value, self._clock())

    def _store(self, key: Hashable, value: T, read_at: float) -> None:
        self._drop(key)
        weight = self._weigh(value) if self._weigh is not None else 0
        if weight > self._max_weight:
            return  # heavier than the whole bound: it would only push everything else out
        self._entries[key] = (read_at + self._ttl, value)
        self._weight += weight
        # The least recently used come first: drop those too old to serve, then as many more
        # as the bounds require.
        dead_before = self._clock() - self._stale_for
        while self._entries:
            oldest, (fresh_until, _) = next(iter(self._entries.items()))
            over = len(self._entries) > self._max or (
                self._weigh is not None and self._weight > self._max_weight
            )
            if not over and fresh_until >= dead_before:
                break
            self._drop(oldest)

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and self._weigh is not None:
            self._weight -= self._weigh(entry[1])

    @property
    def weight(self) -> int:
        """What the entries weigh together (0 without ``weigh``)."""
        return self._weight

    def discard(self, prefix: Hashable) -> None:
        """Drop every entry, and disown every load in flight, whose key is a tuple starting
        with ``prefix``: the next caller reads afresh."""
        for key in [k for k in self._entries if isinstance(k, tuple) and k[0] == prefix]:
            self._drop(key)
        for key in [k for k in self._loading if isinstance(k, tuple) and k[0] == prefix]:
            del self._loading[key]

    def clear(self) -> None:
        """Drop everything, loads in flight included (as :meth:`discard`)."""
        self._entries.clear()
        self._weight = 0
        self._loading.clear()
