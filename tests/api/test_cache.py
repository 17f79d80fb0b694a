"""The status cache: answers live a bounded time, and concurrent misses share one load.

Time is a clock the test moves, and loads wait on events the test sets: nothing here depends on
how fast a (possibly busy) machine runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from imgbatch.api.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def settle(condition: Callable[[], bool]) -> None:
    """Let the loop run (no time passes on the test's clock) until ``condition`` holds."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the event loop never got there")


def test_concurrent_misses_share_one_load() -> None:
    cache: TTLCache[str] = TTLCache(ttl=5, clock=Clock())
    loads = 0
    release = asyncio.Event()

    async def load() -> str:
        nonlocal loads
        loads += 1
        await release.wait()
        return "status"

    async def many() -> list[str]:
        callers = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(50)]
        await settle(lambda: loads == 1)
        release.set()
        return await asyncio.gather(*callers)

    assert asyncio.run(many()) == ["status"] * 50
    assert loads == 1


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str] = TTLCache(ttl=5, clock=Clock())
    calls = 0
    release = asyncio.Event()

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise LookupError("gone")

    async def many() -> list[object]:
        callers = [asyncio.create_task(cache.get_or_load("k", failing)) for _ in range(5)]
        await settle(lambda: calls == 1)
        release.set()
        return await asyncio.gather(*callers, return_exceptions=True)

    outcomes = asyncio.run(many())
    assert all(isinstance(o, LookupError) for o in outcomes)
    assert calls == 1
    with pytest.raises(LookupError):
        asyncio.run(cache.get_or_load("k", failing))
    assert calls == 2


def test_entries_expire_and_the_oldest_are_evicted() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(ttl=1, max_entries=2, clock=clock)
    cache.put(("a", 1), 1)
    cache.put(("b", 1), 2)
    cache.put(("c", 1), 3)
    assert cache.get(("a", 1)) is None  # evicted: least recently used
    assert cache.get(("c", 1)) == 3
    cache.discard("c")
    assert cache.get(("c", 1)) is None
    clock.advance(0.99)
    assert cache.get(("b", 1)) == 2
    clock.advance(0.02)
    assert cache.get(("b", 1)) is None


def test_a_stale_entry_is_served_at_once_while_one_load_refreshes_it() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(ttl=1, stale_for=5, clock=clock)
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
        clock.advance(1.5)  # now stale
        # Nobody waits on the refresh: every caller gets the stale value immediately.
        # (The timeout only turns a cache that would wait on the refresh into a failure.)
        answers = await asyncio.wait_for(
            asyncio.gather(*(cache.get_or_load("k", load) for _ in range(20))), timeout=10
        )
        assert answers == [1] * 20
        await settle(lambda: loads == 2)
        assert loads == 2  # one refresh, not twenty
        release.set()
        await settle(lambda: cache.get("k") == 2)

    asyncio.run(scenario())


def test_an_entry_too_stale_to_serve_waits_for_a_fresh_load() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(ttl=1, stale_for=1, clock=clock)
    values = iter([1, 2])

    async def load() -> int:
        return next(values)

    async def scenario() -> tuple[int, int]:
        first = await cache.get_or_load("k", load)
        clock.advance(2.5)
        return first, await cache.get_or_load("k", load)

    assert asyncio.run(scenario()) == (1, 2)


def test_a_refresh_that_started_before_discard_does_not_put_its_value_back() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(ttl=1, stale_for=5, clock=clock)
    answers = iter(["old", "read before the cancel", "after the cancel"])
    reading = asyncio.Event()
    release = asyncio.Event()
    refreshed = asyncio.Event()

    async def load() -> str:
        value = next(answers)
        if value == "read before the cancel":
            reading.set()
            await release.wait()
            refreshed.set()
        return value

    async def scenario() -> str:
        await cache.get_or_load(("r1", 0), load)
        clock.advance(1.5)
        assert await cache.get_or_load(("r1", 0), load) == "old"  # starts the refresh
        await reading.wait()
        cache.discard("r1")  # e.g. the request was cancelled meanwhile
        release.set()
        await refreshed.wait()
        await settle(lambda: not cache.loading(("r1", 0)))
        return await cache.get_or_load(("r1", 0), load)

    assert asyncio.run(scenario()) == "after the cancel"


def test_a_failed_refresh_keeps_serving_the_stale_value_until_it_ages_out() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(ttl=1, stale_for=10, clock=clock)
    healthy = True

    async def load() -> str:
        if not healthy:
            raise ConnectionError("database down")
        return "status"

    async def scenario() -> None:
        nonlocal healthy
        await cache.get_or_load("k", load)
        healthy = False
        clock.advance(1.5)
        assert await cache.get_or_load("k", load) == "status"  # starts a refresh that fails
        await settle(lambda: not cache.loading("k"))
        assert await cache.get_or_load("k", load) == "status"
        clock.advance(10)
        with pytest.raises(ConnectionError):
            await cache.get_or_load("k", load)

    asyncio.run(scenario())


def test_a_caller_after_discard_does_not_share_the_load_that_started_before_it() -> None:
    cache: TTLCache[str] = TTLCache(ttl=5, clock=Clock())
    answers = iter(["read before the cancel", "after the cancel"])
    reading = asyncio.Event()
    release = asyncio.Event()

    async def load() -> str:
        value = next(answers)
        if value == "read before the cancel":
            reading.set()
            await release.wait()
        return value

    async def scenario() -> tuple[str, str, str]:
        early = asyncio.create_task(cache.get_or_load(("r1", 0), load))
        await reading.wait()
        cache.discard("r1")
        late = await cache.get_or_load(("r1", 0), load)  # a load of its own, not the early one
        release.set()
        return await early, late, await cache.get_or_load(("r1", 0), load)

    early, late, cached = asyncio.run(scenario())
    assert early == "read before the cancel"  # its own callers still get an answer
    assert late == cached == "after the cancel"  # and it was not stored over the newer one


def test_an_entry_ages_from_when_its_load_started() -> None:
    # A key revoked while its lookup was in flight must be refused `ttl` after the lookup
    # began, however slow the lookup was.
    clock = Clock()
    cache: TTLCache[str] = TTLCache(ttl=1, clock=clock)
    values = iter(["read", "read again"])

    async def slow_load() -> str:
        clock.advance(0.75)  # the database took its time
        return next(values)

    async def scenario() -> list[str | None]:
        await cache.get_or_load("k", slow_load)
        seen = [cache.get("k")]
        clock.advance(0.3)  # 1.05 s after the load started, 0.3 s after it finished
        seen.append(cache.get("k"))
        return seen

    assert asyncio.run(scenario()) == ["read", None]


def test_clear_forgets_entries_and_loads_in_flight() -> None:
    cache: TTLCache[str] = TTLCache(ttl=5, clock=Clock())
    answers = iter(["before", "after"])
    reading = asyncio.Event()
    release = asyncio.Event()

    async def load() -> str:
        value = next(answers)
        if value == "before":
            reading.set()
            await release.wait()
        return value

    async def scenario() -> tuple[str, str]:
        cache.put("other", "x")
        early = asyncio.create_task(cache.get_or_load("k", load))
        await reading.wait()
        cache.clear()  # e.g. a key was revoked
        assert cache.get("other") is None
        release.set()
        await early
        return await early, await cache.get_or_load("k", load)

    assert asyncio.run(scenario()) == ("before", "after")


def test_entries_too_old_to_serve_are_dropped_as_new_ones_come_in() -> None:
    clock = Clock()
    cache: TTLCache[bytes] = TTLCache(ttl=1, stale_for=5, weigh=len, max_weight=10_000, clock=clock)
    for page in range(5):
        cache.put(("r", page), b"x" * 1000)
    assert cache.weight == 5000
    clock.advance(6.5)  # past fresh + stale: nobody may be served these any more
    cache.put(("other", 0), b"y" * 10)
    assert cache.weight == 10
    assert [cache.get(("r", page)) for page in range(5)] == [None] * 5
    assert cache.get(("other", 0)) == b"y" * 10


def test_the_least_recently_used_go_first_beyond_the_weight_bound() -> None:
    clock = Clock()
    cache: TTLCache[bytes] = TTLCache(ttl=60, weigh=len, max_weight=3000, clock=clock)
    cache.put(("a", 0), b"a" * 1000)
    cache.put(("b", 0), b"b" * 1000)
    cache.put(("c", 0), b"c" * 1000)
    assert cache.get(("a", 0)) == b"a" * 1000  # now the most recently used
    cache.put(("d", 0), b"d" * 1500)
    assert cache.get(("b", 0)) is None and cache.get(("c", 0)) is None
    assert cache.get(("a", 0)) == b"a" * 1000 and cache.get(("d", 0)) == b"d" * 1500
    assert cache.weight == 2500
    cache.put(("a", 0), b"A" * 100)  # replacing an entry replaces its weight
    cache.discard("d")
    assert cache.weight == 100
    cache.put(("huge", 0), b"h" * 5000)  # heavier than the bound: not kept at all
    assert cache.get(("huge", 0)) is None and cache.weight == 100


def test_an_entry_near_its_end_is_read_again_ahead_and_never_served_past_ttl() -> None:
    # The API key cache: never served stale (a revoked key is refused within ttl), yet a key in
    # steady use is never waited for, because the last half of its time starts a reload.
    clock = Clock()
    cache: TTLCache[str] = TTLCache(ttl=1, refresh_ahead=0.5, clock=clock)
    loads: list[str] = []
    release = asyncio.Event()

    async def load() -> str:
        loads.append(f"read {len(loads) + 1}")
        if len(loads) > 1:
            await release.wait()
        return loads[-1]

    async def scenario() -> None:
        assert await cache.get_or_load("k", load) == "read 1"
        clock.advance(0.4)  # more than half its time left: no reload
        assert await cache.get_or_load("k", load) == "read 1"
        assert loads == ["read 1"]
        clock.advance(0.2)
        # Nobody waits on the reload: every caller gets the entry, which is still fresh.
        answers = await asyncio.wait_for(
            asyncio.gather(*(cache.get_or_load("k", load) for _ in range(20))), timeout=10
        )
        assert answers == ["read 1"] * 20
        await settle(lambda: len(loads) == 2)  # one reload, not twenty
        clock.advance(0.5)  # 1.1 s after the first read began: never served past its ttl
        assert cache.get("k") is None
        waiting = asyncio.create_task(cache.get_or_load("k", load))
        await settle(lambda: cache.loading("k"))
        release.set()
        # The reload began 0.6 s in: it is fresh until 1.6 s.
        assert await waiting == "read 2"
        assert cache.get("k") == "read 2"
        clock.advance(0.6)
        assert cache.get("k") is None

    asyncio.run(scenario())
