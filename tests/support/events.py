"""Reading ``GET /api/requests/{id}/events`` the way a client does: one stream, or a stream
followed across reconnects (``Last-Event-ID``) until its final event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

FINAL_EVENTS = ("completed", "failed", "cancelled")


@dataclass
class Event:
    event: str
    id: str
    data: dict[str, Any]
    received_at: float = field(default_factory=time.time)


def parse(sse: ServerSentEvent) -> Event | None:
    """An event of ours, or None for the opening comment and `retry:` hint (no data)."""
    return Event(sse.event, sse.id, json.loads(sse.data)) if sse.data else None


def events_path(request_id: str) -> str:
    return f"/api/requests/{request_id}/events"


def read_stream(
    api: httpx.Client,
    request_id: str,
    *,
    last_event_id: str | None = None,
    until: str | None = None,
    timeout: float = 60.0,
) -> list[Event]:
    """The events of one connection, until the server closes it (or an ``until`` event)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[Event] = []
    with connect_sse(
        api, "GET", events_path(request_id), headers=headers, timeout=httpx.Timeout(timeout)
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            event = parse(sse)
            if event is None:
                continue
            events.append(event)
            if event.event == until:
                break
    return events


def follow(
    api: httpx.Client, request_id: str, *, timeout: float = 120.0
) -> tuple[list[Event], int]:
    """Every event until a final one, reconnecting with Last-Event-ID whenever a stream ends
    without it (its lifetime ran out); returns the events and the number of connections."""
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    connections = 0
    while time.monotonic() < deadline:
        connections += 1
        last = events[-1].id if events else None
        events += read_stream(api, request_id, last_event_id=last)
        if events and events[-1].event in FINAL_EVENTS:
            return events, connections
    raise AssertionError(f"no final event for {request_id} after {timeout}s: {events}")


@dataclass
class Watched:
    """What one of many concurrent subscribers saw: when its final event came, how many."""

    final_event: str
    final_at: float
    events: int


async def watch_together(
    base_url: str,
    request_id: str,
    count: int,
    *,
    when_listening: Callable[[], None] | None = None,
    timeout: float = 120.0,
    headers: dict[str, str] | None = None,
) -> list[Watched]:
    """``count`` concurrent subscribers on one request's stream (one asyncio client, a
    connection each). ``when_listening`` runs once every subscriber has had its first event;
    each subscriber returns at its final event."""
    connected = asyncio.Semaphore(0)
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=60, headers=headers
    ) as client:

        async def subscriber() -> Watched:
            seen = 0
            async with aconnect_sse(client, "GET", events_path(request_id)) as source:
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    seen += 1
                    if seen == 1:
                        connected.release()
                    if sse.event in FINAL_EVENTS:
                        return Watched(sse.event, time.time(), seen)
            raise AssertionError("a stream ended without its final event")

        tasks = [asyncio.create_task(subscriber()) for _ in range(count)]
        async with asyncio.timeout(timeout):
            for _ in range(count):
                await connected.acquire()
            if when_listening is not None:
                when_listening()
            return list(await asyncio.gather(*tasks))
