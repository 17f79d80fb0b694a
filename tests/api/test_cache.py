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


def test_a_stale_entry_is_served_at_once_while_one_load_refreshes_it() -> None:
    cache: TTLCache[int] = TTLCache(ttl=0.05, stale_for=5)
    loads = 0
    release = asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        if loads > 1:
            await release.wait()
        return loads

    async def scenario() -> None:
        assert await cache.get_or_load("k", load) == 1
        await asyncio.sleep(0.06)  # now stale
        # Nobody waits on the refresh: every caller gets the stale value immediately.
        answers = await asyncio.wait_for(
            asyncio.gather(*(cache.get_or_load("k", load) for _ in range(20))), timeout=1
        )
        assert answers == [1] * 20
        assert loads == 2  # one refresh, not twenty
        release.set()
        await asyncio.sleep(0.01)
        assert await cache.get_or_load("k", load) == 2

    asyncio.run(scenario())


def test_an_entry_too_stale_to_serve_waits_for_a_fresh_load() -> None:
    cache: TTLCache[int] = TTLCache(ttl=0.02, stale_for=0.02)
    values = iter([1, 2])

    async def load() -> int:
        return next(values)

    async def scenario() -> tuple[int, int]:
        first = await cache.get_or_load("k", load)
        await asyncio.sleep(0.05)
        return first, await cache.get_or_load("k", load)

    assert asyncio.run(scenario()) == (1, 2)


def test_a_refresh_that_started_before_discard_does_not_put_its_value_back() -> None:
    cache: TTLCache[str] = TTLCache(ttl=0.02, stale_for=5)
    answers = iter(["old", "read before the cancel", "after the cancel"])
    reading = asyncio.Event()
    release = asyncio.Event()

    async def load() -> str:
        value = next(answers)
        if value == "read before the cancel":
            reading.set()
            await release.wait()
        return value

    async def scenario() -> str:
        await cache.get_or_load(("r1", 0), load)
        await asyncio.sleep(0.03)
        assert await cache.get_or_load(("r1", 0), load) == "old"  # starts the refresh
        await reading.wait()
        cache.discard("r1")  # e.g. the request was cancelled meanwhile
        release.set()
        await asyncio.sleep(0.01)
        return await cache.get_or_load(("r1", 0), load)

    assert asyncio.run(scenario()) == "after the cancel"


def test_a_failed_refresh_keeps_serving_the_stale_value_until_it_ages_out() -> None:
    cache: TTLCache[str] = TTLCache(ttl=0.02, stale_for=0.2)
    healthy = True

    async def load() -> str:
        if not healthy:
            raise ConnectionError("database down")
        return "status"

    async def scenario() -> None:
        nonlocal healthy
        await cache.get_or_load("k", load)
        healthy = False
        await asyncio.sleep(0.03)
        assert await cache.get_or_load("k", load) == "status"
        await asyncio.sleep(0.01)  # the refresh has failed by now
        assert await cache.get_or_load("k", load) == "status"
        await asyncio.sleep(0.25)
        with pytest.raises(ConnectionError):
            await cache.get_or_load("k", load)

    asyncio.run(scenario())
