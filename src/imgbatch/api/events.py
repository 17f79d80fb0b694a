"""``GET /api/requests/{id}/events``: a request's progress as Server-Sent Events.

The events come from this process's :class:`api.feeds.EventHub` (one pub/sub connection, one
feed per watched request, MongoDB as the safety net); ids are cursors derived from the request
document, so ``Last-Event-ID`` resumes on any API process. docs/live-events.md is the contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent

from imgbatch.api.deps import OwnedRequestDep, ProductsDep, SettingsDep, StateDep
from imgbatch.api.feeds import Cursor, EventHub, Overflow, replayed_product
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.core.settings import Settings
from imgbatch.models.products import ProductRepository

router = APIRouter(tags=["requests"])

# A resumed stream replays products finished this long before its cursor's time as well: the
# cursor's clock (whoever last wrote the request) and the product's need not agree exactly.
REPLAY_SLACK = timedelta(seconds=5)
REPLAY_LIMIT = 1000  # a client away for longer reloads its product pages from status
RECONNECT_MS = 1000  # the `retry:` hint for EventSource clients


async def _stream(
    hub: EventHub,
    request_id: str,
    resume_from: Cursor | None,
    products: ProductRepository,
    settings: Settings,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.events_max_seconds
    yield ServerSentEvent(comment="imgbatch events", retry=RECONNECT_MS).encode()
    sent = resume_from
    replay = resume_from is not None
    async with hub.watch(request_id) as inbox:
        while True:
            item = await inbox.get(deadline - loop.time())
            if item is None or isinstance(item, Overflow):
                # The lifetime is over (or the client fell behind): the client reconnects
                # with its Last-Event-ID and continues where it was.
                return
            if isinstance(item, bytes):
                yield item
                continue
            if item.is_gone:
                return
            if replay and resume_from is not None:
                replay = False
                # Replayed once, on the first snapshot, and only if something finished since.
                if item.cursor.progress_key != resume_from.progress_key:
                    since = resume_from.at - REPLAY_SLACK
                    finished = await products.finished_since(request_id, since, limit=REPLAY_LIMIT)
                    for product in finished:
                        yield replayed_product(settings, item.cursor, product)
            now = item.cursor
            if sent is None or now.progress_key != sent.progress_key:
                yield item.progress_event
            if sent is None or now.status_key != sent.status_key:
                yield item.status_event
            sent = now
            if item.is_final:
                yield item.final_event
                return


@router.get(
    "/api/requests/{request_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(*OWNED_REQUEST)},
)
async def request_events(
    # Checked before the stream starts, so a stranger gets a plain 404 and an expiry a 410.
    record: OwnedRequestDep,
    products: ProductsDep,
    settings: SettingsDep,
    state: StateDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    request_id = record.id
    return EventSourceResponse(
        _stream(state.events, request_id, Cursor.parse(last_event_id), products, settings),
        ping=settings.events_keepalive_seconds,
        headers={"Cache-Control": "no-store"},
    )
