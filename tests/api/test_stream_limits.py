"""Bounded event streams (issue 22): concurrent streams per key and per process, resumes per
minute, the replay's size, hostile ``Last-Event-ID`` values, a revoked key's open streams, and
a new subscriber's first read going through the feed's throttle."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import httpx
import pytest
from httpx_sse import connect_sse
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from imgbatch.api.events import REPLAY_SLACK
from imgbatch.api.feeds import PROGRESS_INTERVAL, Cursor, EventHub, Snapshot
from imgbatch.cli.stack import Stack
from imgbatch.models.requests import RequestRecord, RequestRepository, RequestStatus
from tests.support.client import sheet, upload, wait_for_status
from tests.support.events import events_path, parse, read_stream
from tests.support.keys import cli, client, new_key
from tests.support.logs import log_lines
from tests.support.origin import Origin
from tests.support.seeding import seed_request, stack_runtime
from tests.support.stacks import side_api
from tests.support.waiting import wait_until

LIMITS_ENV = {
    "IMGBATCH_AUTH_DISABLED": "false",
    "IMGBATCH_EVENTS_STREAMS_PER_OWNER": "2",
    "IMGBATCH_EVENTS_STREAMS_PER_PROCESS": "4",
    "IMGBATCH_EVENTS_RESUMES_PER_MINUTE": "3",
    "IMGBATCH_EVENTS_REPLAY_LIMIT": "2",
    "IMGBATCH_EVENTS_KEEPALIVE_SECONDS": "1",
    "IMGBATCH_KEY_CACHE_SECONDS": "1",
}
NAME = "api-streams"


@pytest.fixture(scope="module")
def limited(stack: Stack) -> Iterator[str]:
    with side_api(stack, NAME, LIMITS_ENV) as url:
        yield url


def _held(url: str, key: str, origin: Origin, gate: str) -> str:
    """A request of ``key``'s that stays in progress until ``gate`` opens."""
    with client(url, key) as api:
        rows = [(1, "Held", origin.url(f"/gate/{gate}/rocket.jpg"))]
        return str(upload(api, sheet(rows)).json()["request_id"])


def _open(
    streams: ExitStack, url: str, key: str, request_id: str, last_event_id: str | None = None
) -> httpx.Response:
    api = streams.enter_context(client(url, key))
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return streams.enter_context(api.stream("GET", events_path(request_id), headers=headers))


def _retry_after(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isascii() and value.isdigit(), value
    return int(value)


def test_streams_are_capped_per_key_and_per_process(
    limited: str, stack: Stack, origin: Origin
) -> None:
    gate = uuid.uuid4().hex
    keys = [new_key(stack, f"streams-{n}")[1] for n in range(3)]
    requests = [_held(limited, key, origin, gate) for key in keys]
    try:
        with ExitStack() as held:
            a1 = _open(held, limited, keys[0], requests[0])
            _open(held, limited, keys[0], requests[0])
            with ExitStack() as extra:
                third = _open(extra, limited, keys[0], requests[0])
                assert third.status_code == 429, third.read()
                assert 1 <= _retry_after(third) <= 60
                assert "event streams per API key" in third.read().decode()
            assert a1.status_code == 200
            # Another key is not held back by the first one's streams...
            assert _open(held, limited, keys[1], requests[1]).status_code == 200
            assert _open(held, limited, keys[1], requests[1]).status_code == 200
            # ...until the process is full, whoever asks.
            with ExitStack() as extra:
                busy = _open(extra, limited, keys[2], requests[2])
                assert busy.status_code == 503, busy.read()
                assert _retry_after(busy) >= 1
            a1.close()

            # The slot a closed stream held is given back.
            def admitted() -> bool:
                with ExitStack() as attempt:
                    return _open(attempt, limited, keys[2], requests[2]).status_code == 200

            wait_until(admitted, timeout=10, every=0.1, what="a freed stream slot")

        # Every slot comes back once the clients are gone (the next tests need them).
        def all_free() -> bool:
            with ExitStack() as attempt:
                opened = [
                    _open(attempt, limited, k, r)
                    for k, r in zip(keys, requests, strict=True)
                    for _ in "ab"
                ][:4]
                return all(s.status_code == 200 for s in opened)

        wait_until(all_free, timeout=10, every=0.1, what="every stream slot given back")
    finally:
        origin.open_gate(gate)


def test_resumes_are_rate_limited_per_key(limited: str, stack: Stack, origin: Origin) -> None:
    gate = uuid.uuid4().hex
    _, key = new_key(stack, "resumes")
    request_id = _held(limited, key, origin, gate)
    cursor = f"1.1.0.{int(time.time() * 1000)}"
    try:
        for _ in range(3):
            with ExitStack() as one:
                assert _open(one, limited, key, request_id, cursor).status_code == 200
        with ExitStack() as one:
            refused = _open(one, limited, key, request_id, cursor)
            assert refused.status_code == 429
            assert 1 <= _retry_after(refused) <= 60
            assert "resumed event streams" in refused.read().decode()
        # A fresh stream (no Last-Event-ID) is not a resume.
        with ExitStack() as one:
            assert _open(one, limited, key, request_id).status_code == 200
    finally:
        origin.open_gate(gate)


def test_a_resume_replays_at_most_the_replay_limit(
    limited: str, stack: Stack, origin: Origin
) -> None:
    _, key = new_key(stack, "replay")
    with client(limited, key) as api:
        rows = [(n, f"P{n}", origin.url("/img/rocket.jpg")) for n in range(1, 6)]
        request_id = upload(api, sheet(rows)).json()["request_id"]
        wait_for_status(api, request_id)
        # Epoch 1, nothing finished, at the epoch's start: every product finished since.
        events = read_stream(api, request_id, last_event_id="1.1.0.0")
    assert [e.event for e in events].count("product") == 2
    assert events[-1].event == "completed"


HOSTILE_IDS = [
    "0.0.0.99999999999999999",
    "0.0.0.-62135596800000",
    "1.1.1.1e3",
    "1_0.1.0.5",
    "\u0663.1.0.5",
    "9" * 5000,
    "1.1.1",
    "-1.-1.-1.-1",
]


def test_a_hostile_last_event_id_is_no_id_and_never_a_traceback(
    limited: str, stack: Stack, origin: Origin
) -> None:
    _, key = new_key(stack, "hostile-ids")
    with client(limited, key) as api:
        request_id = upload(api, sheet([(1, "A", origin.url("/img/rocket.jpg"))])).json()[
            "request_id"
        ]
        wait_for_status(api, request_id)
        for value in HOSTILE_IDS:
            with connect_sse(
                api, "GET", events_path(request_id), headers={"Last-Event-ID": value.encode()}
            ) as source:
                assert source.response.status_code == 200
                events = [e for sse in source.iter_sse() if (e := parse(sse)) is not None]
            # From scratch: the whole state, then the final event.
            assert [e.event for e in events] == ["progress", "status", "completed"], value
    logged = "\n".join(log_lines(stack.data_dir / "logs" / f"{NAME}.log"))
    assert "Traceback" not in logged
    assert "OverflowError" not in logged


@given(st.text() | st.from_regex(r"\A-?[0-9]{1,20}(\.-?[0-9]{1,20}){3}\Z"))
def test_any_last_event_id_parses_to_a_usable_cursor_or_none(text: str) -> None:
    cursor = Cursor.parse(text)
    if cursor is not None:
        assert cursor.at - REPLAY_SLACK < datetime.now(UTC).replace(year=9999)
        assert Cursor.parse(str(cursor)) == cursor


def test_a_revoked_keys_open_stream_closes_within_the_key_cache_time(
    limited: str, stack: Stack, origin: Origin
) -> None:
    gate = uuid.uuid4().hex
    key_id, key = new_key(stack, "revoked-stream")
    request_id = _held(limited, key, origin, gate)
    ended: list[float] = []
    opened = threading.Event()

    def watch() -> None:
        with client(limited, key) as api, api.stream("GET", events_path(request_id)) as stream:
            assert stream.status_code == 200
            opened.set()
            for _ in stream.iter_bytes():
                pass
        ended.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        assert opened.wait(30)
        cli(stack, "keys", "revoke", key_id)
        revoked = time.monotonic()
        watcher.join(timeout=15)
        assert ended, "the revoked key's stream is still open"
        # key_cache_seconds is 1; the stream checks its key that often.
        assert ended[0] - revoked < 4.0
        with client(limited, key) as api:
            assert api.get(events_path(request_id)).status_code == 401
    finally:
        origin.open_gate(gate)


class CountingRequests(RequestRepository):
    """The real repository, counting the reads the feed makes."""

    reads = 0

    async def get(self, request_id: str, *, owner: str | None = None) -> RequestRecord | None:
        self.reads += 1
        return await super().get(request_id, owner=owner)


def test_new_subscribers_first_read_goes_through_the_feeds_throttle(stack: Stack) -> None:
    with stack_runtime(stack) as rt:
        request_id = seed_request(rt, [["https://img.example.com/a.jpg"]])
        settings = stack.settings_for_children()

        async def subscribe_one_by_one() -> tuple[int, list[Snapshot | None]]:
            redis = Redis.from_url(settings.require_redis_url())
            requests = CountingRequests(rt.db)
            hub = EventHub(redis, requests, settings)
            firsts: list[Snapshot | None] = []
            try:
                async with hub.watch(request_id) as first:
                    firsts.append(_snapshot(await first.get(5.0)))
                    started = asyncio.get_running_loop().time()
                    # Twenty new subscribers, one every 20 ms: 0.4 s in all.
                    for _ in range(20):
                        async with hub.watch(request_id) as inbox:
                            firsts.append(_snapshot(await inbox.get(5.0)))
                        await asyncio.sleep(0.02)
                    elapsed = asyncio.get_running_loop().time() - started
            finally:
                await hub.close()
                await redis.aclose()
            # The first read, then at most one per PROGRESS_INTERVAL (and one more in flight).
            assert requests.reads <= 2 + elapsed / PROGRESS_INTERVAL, requests.reads
            return requests.reads, firsts

        _, firsts = rt.run(subscribe_one_by_one())
    # Every subscriber got the request's state at once, from the feed's last read.
    assert all(s is not None and s.record.id == request_id for s in firsts)
    assert all(s is not None and s.record.status == RequestStatus.PENDING for s in firsts)


def _snapshot(item: object) -> Snapshot | None:
    return item if isinstance(item, Snapshot) else None
