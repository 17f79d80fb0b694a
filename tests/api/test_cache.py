"""The status cache: answers live a bounded time, and concurrent misses share one load."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.cache import TTLCache


def test_concurrent_misses_share_one_load() -> None:
    cache: TTLCache[str] = TTLCache(ttl=5)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return "status"

    async def many() -> list[str]:
        return await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(50)))

    assert asyncio.run(many()) == ["status"] * 50
    assert loads == 1


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str] = TTLCache(ttl=5)
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("gone")

    async def many() -> list[object]:
        return await asyncio.gather(
            *(cache.get_or_load("k", failing) for _ in range(5)), return_exceptions=True
        )

    outcomes = asyncio.run(many())
    assert all(isinstance(o, LookupError) for o in outcomes)
    assert calls == 1
    with pytest.raises(LookupError):
        asyncio.run(cache.get_or_load("k", failing))
    assert calls == 2


def test_entries_expire_and_the_oldest_are_evicted() -> None:
    cache: TTLCache[int] = TTLCache(ttl=0.05, max_entries=2)
    cache.put(("a", 1), 1)
    cache.put(("b", 1), 2)
    cache.put(("c", 1), 3)
    assert cache.get(("a", 1)) is None  # evicted: least recently used
    assert cache.get(("c", 1)) == 3
    cache.discard("c")
    assert cache.get(("c", 1)) is None
    time.sleep(0.06)
    assert cache.get(("b", 1)) is None
