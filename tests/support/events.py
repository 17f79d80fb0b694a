"""Reading ``GET /api/requests/{id}/events`` the way a client does: one stream, or a stream
followed across reconnects (``Last-Event-ID``) until its final event."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

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
