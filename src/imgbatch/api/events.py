"""``GET /api/requests/{id}/events``: a request's progress as Server-Sent Events.

The events come from this process's :class:`api.feeds.EventHub` (one pub/sub connection, one
feed per watched request, MongoDB as the safety net); ids are cursors derived from the request
document, so ``Last-Event-ID`` resumes on any API process. docs/live-events.md is the contract.
How many streams a caller may hold and resume: :mod:`api.streams`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header
from pymongo.errors import ConnectionFailure
from sse_starlette import EventSourceResponse, ServerSentEvent

from imgbatch.api.auth import Unauthorized, authenticate
from imgbatch.api.deps import OwnedRequestDep, ProductsDep, SettingsDep, StateDep
from imgbatch.api.feeds import Cursor, EventHub, Overflow, replayed_product
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.api.state import AppState
from imgbatch.api.streams import StreamsBusy, TooManyStreams
from imgbatch.core.settings import Settings
from imgbatch.models.products import ProductRepository

router = APIRouter(tags=["requests"])

# A resumed stream replays products finished this long before its cursor's time as well: the
# cursor's clock (whoever last wrote the request) and the product's need not agree exactly.
REPLAY_SLACK = timedelta(seconds=5)
RECONNECT_MS = 1000  # the `retry:` hint for EventSource clients
# How often an open stream asks whether its key still holds: the key cache's lifetime (a
# revocation empties that cache at once in every process), and at most once a second: with
# KEY_CACHE_SECONDS=0 each check is a MongoDB read, for every open stream.
_MIN_KEY_CHECK_SECONDS = 1.0

KeyCheck = Callable[[], Awaitable[bool]]


async def _stream(
    hub: EventHub,
    request_id: str,
    resume_from: Cursor | None,
    products: ProductRepository,
    settings: Settings,
    key_still_valid: KeyCheck,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.events_max_seconds
    check_every = max(settings.key_cache_seconds, _MIN_KEY_CHECK_SECONDS)
    next_check = loop.time() + check_every
    yield ServerSentEvent(comment="imgbatch events", retry=RECONNECT_MS).encode()
    sent = resume_from
    replay = resume_from is not None
    async with hub.watch(request_id) as inbox:
        while True:
            if loop.time() >= next_check:
                # A revoked key's stream ends here; its reconnect then gets the 401.
                if not await key_still_valid():
                    return
                next_check = loop.time() + check_every
            item = await inbox.get(min(deadline, next_check) - loop.time())
            if item is None and loop.time() < deadline:
                continue
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
                    finished = await products.finished_since(
                        request_id, since, limit=settings.events_replay_limit
                    )
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


def _key_check(state: AppState, authorization: str | None, x_api_key: str | None) -> KeyCheck:
    async def still_valid() -> bool:
        try:
            await authenticate(state, authorization=authorization, x_api_key=x_api_key)
        except Unauthorized:
            return False
        except ConnectionFailure:
            return True  # MongoDB is away: the key is not known to be revoked
        return True

    return still_valid


@router.get(
    "/api/requests/{request_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **errors(*OWNED_REQUEST, TooManyStreams, StreamsBusy),
    },
)
async def request_events(
    # Checked before the stream starts, so a stranger gets a plain 404 and an expiry a 410.
    record: OwnedRequestDep,
    products: ProductsDep,
    settings: SettingsDep,
    state: StateDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> EventSourceResponse:
    request_id, owner = record.id, record.owner
    resume_from = Cursor.parse(last_event_id)
    ticket = state.streams.admit(owner, resuming=resume_from is not None)
    key_check = _key_check(state, authorization, x_api_key)

    async def admitted() -> AsyncIterator[bytes]:
        try:
            async for chunk in _stream(
                state.events, request_id, resume_from, products, settings, key_check
            ):
                yield chunk
        finally:
            ticket.release()

    body = admitted()
    ticket.bind(body)
    return EventSourceResponse(
        body, ping=settings.events_keepalive_seconds, headers={"Cache-Control": "no-store"}
    )
