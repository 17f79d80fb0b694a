"""Where the live events of ``GET /api/requests/{id}/events`` come from, in one API process.

How (docs/live-events.md has the contract):

- Workers publish a notice on the request's Redis channel wherever its state moves
  (:mod:`domain.events`). Each API process holds **one** pub/sub connection (:class:`EventHub`)
  and one :class:`RequestFeed` per request that someone in this process watches, shared by all
  of that request's subscribers: 200 browsers on one request cost one channel subscription and
  one MongoDB read per wake-up, not 200.
- A notice only wakes the feed: the feed then reads the request document, the source of truth,
  at most every 250 ms (at once for a status change; a new subscriber gets the last read at once
  and waits its turn for the next), and also every ``events_poll_seconds``
  when no notice comes, because pub/sub drops messages. So a stream always ends with the right
  final state, and one opened after the end gets it at once. Product notices carry their
  payload and are passed on as they arrive.
- Event ids are **cursors derived from the request document**, never from this process's
  memory, so a client may resume on any API process: ``{epoch}.{rank}.{finished}.{at_ms}``,
  where ``epoch`` counts the request's runs (``completions``, plus one while it is not
  completed: a retry starts a new epoch), ``rank`` orders the status within a run (0 pending,
  1 in progress, 2 final), ``finished`` is images done + failed, and ``at_ms`` the document's
  ``updated_at``. On reconnect with ``Last-Event-ID`` the stream sends what differs from that
  cursor (progress, status, the final event) and replays the products finished since
  ``at_ms`` (less a few seconds of clock slack, so a product may come twice: product events
  are idempotent updates keyed by serial number).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent

from imgbatch.core.logs import log_event
from imgbatch.core.settings import Settings
from imgbatch.domain.events import CHANNEL_PREFIX, PRODUCT, STATUS, channel
from imgbatch.domain.urls import output_urls
from imgbatch.models.products import ProductRecord
from imgbatch.models.requests import RequestRecord, RequestRepository, RequestStatus

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # the bound: progress at most every 250 ms
SUBSCRIBER_BACKLOG = 2000  # a client this far behind is cut off; it resumes with its cursor

_RANK = {
    RequestStatus.PENDING: 0,
    RequestStatus.IN_PROGRESS: 1,
    RequestStatus.COMPLETED: 2,
    RequestStatus.FAILED: 2,
    RequestStatus.CANCELLED: 2,
    RequestStatus.EXPIRED: 3,
}
FINAL_STATUSES = (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)


# Four runs of ASCII digits: counters up to 10**12, a time up to the year 9999 in milliseconds.
_CURSOR = re.compile(r"([0-9]{1,12})\.([0-9])\.([0-9]{1,12})\.([0-9]{1,14})", re.ASCII)
_MAX_AT_MS = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Cursor:
    """A position in a request's life; see the module docstring."""

    epoch: int
    rank: int
    finished: int
    at_ms: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.rank}.{self.finished}.{self.at_ms}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        """The cursor in a ``Last-Event-ID``, or None for anything that is not one of ours
        within bounds (the stream then starts from scratch): the header is the client's, and
        ``int()`` alone takes signs, underscores, non-ASCII digits and years past 9999."""
        match = _CURSOR.fullmatch(text or "")
        if match is None:
            return None
        epoch, rank, finished, at_ms = (int(part) for part in match.groups())
        if at_ms > _MAX_AT_MS:
            return None
        return cls(epoch, rank, finished, at_ms)

    @classmethod
    def of(cls, record: RequestRecord) -> Cursor:
        epoch = record.completions + (0 if record.status == RequestStatus.COMPLETED else 1)
        return cls(
            epoch=epoch,
            rank=_RANK[record.status],
            finished=record.images_done + record.images_failed,
            at_ms=int(record.updated_at.timestamp() * 1000),
        )

    @property
    def status_key(self) -> tuple[int, int]:
        return self.epoch, self.rank

    @property
    def progress_key(self) -> tuple[int, int]:
        return self.epoch, self.finished

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_ms / 1000, UTC)


def _encode(event: str, payload: dict[str, Any], cursor: Cursor) -> bytes:
    # Encoded once per feed and shared by every subscriber: with hundreds of them, building
    # the same text per connection would be most of the stream's CPU.
    return ServerSentEvent(
        data=json.dumps(payload, separators=(",", ":")), event=event, id=str(cursor)
    ).encode()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Snapshot:
    """The request document as one read saw it, with its events encoded on first use."""

    record: RequestRecord

    @cached_property
    def cursor(self) -> Cursor:
        return Cursor.of(self.record)

    @property
    def is_final(self) -> bool:
        return self.record.status in FINAL_STATUSES

    @property
    def is_gone(self) -> bool:
        return self.record.status == RequestStatus.EXPIRED

    @cached_property
    def counters(self) -> dict[str, int]:
        r = self.record
        return {
            "progress": r.progress,
            "products_done": r.products_done,
            "products_total": r.products_total,
            "images_done": r.images_done,
            "images_failed": r.images_failed,
            "images_total": r.images_total,
        }

    @cached_property
    def progress_event(self) -> bytes:
        return _encode("progress", self.counters, self.cursor)

    @cached_property
    def status_event(self) -> bytes:
        payload = {"status": str(self.record.status), "failure_reason": self.record.failure_reason}
        return _encode("status", payload, self.cursor)

    @cached_property
    def final_event(self) -> bytes:
        r = self.record
        payload = {
            "request_id": r.id,
            "status": str(r.status),
            **self.counters,
            "completed_at": _iso(r.completed_at),
            "failure_reason": r.failure_reason,
        }
        return _encode(str(r.status), payload, self.cursor)


def _product_event(
    settings: Settings,
    cursor: Cursor,
    serial_number: int,
    status: str,
    output_keys: list[str | None],
    errors: list[dict[str, Any]],
) -> bytes:
    payload = {
        "serial_number": serial_number,
        "status": status,
        "output_image_urls": output_urls(settings, output_keys),
        "errors": [{"url": e["url"], "code": e["code"], "message": e["message"]} for e in errors],
    }
    return _encode("product", payload, cursor)


def replayed_product(settings: Settings, cursor: Cursor, product: ProductRecord) -> bytes:
    return _product_event(
        settings,
        cursor,
        product.serial_number,
        str(product.status),
        list(product.output_keys),
        [error.model_dump() for error in product.errors],
    )


class Overflow:
    """Put in place of what a subscriber that fell too far behind would have received."""


OVERFLOW = Overflow()
Item = Snapshot | bytes | Overflow


class Subscription:
    """One client's inbox: snapshots and encoded product events, in the order the feed saw
    them. Bounded: a client that stops reading is cut off instead of growing the process."""

    def __init__(self, limit: int = SUBSCRIBER_BACKLOG) -> None:
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()
        self._limit = limit
        self._overflowed = False

    def put(self, item: Item) -> None:
        if self._overflowed:
            return
        if len(self._items) >= self._limit:
            self._overflowed = True
            self._items.clear()
            item = OVERFLOW
        self._items.append(item)
        self._ready.set()

    async def get(self, seconds: float) -> Item | None:
        """The next item, or None when ``seconds`` pass first."""
        if not self._items:
            self._ready.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._ready.wait()
        return self._items.popleft() if self._items else None


class RequestFeed:
    """What one API process knows about one watched request, shared by its subscribers."""

    def __init__(
        self,
        request_id: str,
        requests: RequestRepository,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.request_id = request_id
        self.subscribers: set[Subscription] = set()
        self._requests = requests
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._urgent = False
        # Set by stop(): the loop ends on it even if the task's cancellation is lost. PyMongo's
        # socket writes go through asyncio.wait_for, which on Python 3.11 loses a cancellation
        # arriving as the write completes (gh-86296); stop() awaits the task under the hub's
        # lock, so a loop that outlived it would block every stream of this process.
        self._stopped = False
        self._last_read = -1.0e9
        self._snapshot: Snapshot | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"events-feed-{self.request_id}")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def join(self, subscription: Subscription) -> None:
        self.subscribers.add(subscription)
        # A new subscriber gets the state this feed last read at once, from memory, and a
        # fresh read through the same throttle as any other wake-up: subscribing in a loop
        # must not turn into a MongoDB read per connection.
        if self._snapshot is not None:
            subscription.put(self._snapshot)
        self._refresh(urgent=False)

    def leave(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    def notice(self, notice: dict[str, Any]) -> None:
        kind = notice.get("kind")
        if kind == PRODUCT and self._snapshot is not None:
            event = _product_event(
                self._settings,
                self._snapshot.cursor,
                int(notice["serial_number"]),
                str(notice["status"]),
                list(notice.get("output_keys", [])),
                list(notice.get("errors", [])),
            )
            for subscriber in self.subscribers:
                subscriber.put(event)
        self._refresh(urgent=kind == STATUS)

    def _refresh(self, *, urgent: bool) -> None:
        self._urgent = self._urgent or urgent
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopped:
            with suppress(TimeoutError):
                async with asyncio.timeout(self._settings.events_poll_seconds):
                    await self._wake.wait()
            if not self._urgent:
                # Progress at most every PROGRESS_INTERVAL however fast products finish.
                wait = self._last_read + PROGRESS_INTERVAL - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            # Cleared before the read: a notice arriving during it triggers one more read.
            self._wake.clear()
            self._urgent = False
            self._last_read = self._clock()
            try:
                record = await self._requests.get(self.request_id)
            except PyMongoError as exc:
                log_event(
                    logger,
                    "events.read_failed",
                    logging.WARNING,
                    request_id=self.request_id,
                    error=type(exc).__name__,
                )
                continue
            if self._stopped:
                return
            if record is None:  # purged: nothing more will ever happen to it
                record = _expired_placeholder(self.request_id)
            snapshot = Snapshot(record)
            self._snapshot = snapshot
            for subscriber in self.subscribers:
                subscriber.put(snapshot)


def _expired_placeholder(request_id: str) -> RequestRecord:
    moment = datetime.now(UTC)
    return RequestRecord(
        id=request_id,
        owner="",
        status=RequestStatus.EXPIRED,
        columns=[],
        products_total=0,
        images_total=0,
        created_at=moment,
        updated_at=moment,
    )


@dataclass
class EventHub:
    """This process's one pub/sub connection and its feeds, one per watched request."""

    redis: Redis
    requests: RequestRepository
    settings: Settings
    _feeds: dict[str, RequestFeed] = field(default_factory=dict)
    # Channels heard for the process's lifetime (CHANGES_CHANNEL), each with its handler.
    _listeners: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    _heard: set[str] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _reader: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)

    @property
    def watched(self) -> int:
        return len(self._feeds)

    @asynccontextmanager
    async def watch(self, request_id: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        await self._attach(request_id, subscription)
        try:
            yield subscription
        finally:
            await self._detach(request_id, subscription)

    async def _attach(self, request_id: str, subscription: Subscription) -> None:
        async with self._lock:
            feed = self._feeds.get(request_id)
            if feed is None:
                loop = asyncio.get_running_loop()
                feed = RequestFeed(request_id, self.requests, self.settings, loop.time)
                self._feeds[request_id] = feed
                await self._redis_call("subscribe", channel(request_id))
                feed.start()
                self._start_reader()
            feed.join(subscription)

    def listen(self, name: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call ``handler`` with every JSON object published on channel ``name``, over the same
        connection as the feeds. The reader subscribes (so start-up never waits on Redis) and
        retries until that works; redis-py subscribes again after a reconnect. What is
        published while the connection is down is lost: callers must cope."""
        self._listeners[name] = handler
        self._start_reader()

    async def _subscribe_listeners(self) -> None:
        for name in self._listeners.keys() - self._heard:
            if await self._redis_call("subscribe", name):
                self._heard.add(name)

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="events-pubsub")

    async def _detach(self, request_id: str, subscription: Subscription) -> None:
        async with self._lock:
            feed = self._feeds.get(request_id)
            if feed is None:
                return
            feed.leave(subscription)
            if feed.subscribers:
                return
            del self._feeds[request_id]
            await feed.stop()
            await self._redis_call("unsubscribe", channel(request_id))

    async def _redis_call(self, command: str, name: str) -> bool:
        # Without Redis the feed still polls MongoDB: slower, never wrong.
        try:
            await getattr(self._pubsub, command)(name)
        except (RedisError, OSError) as exc:
            log_event(
                logger,
                f"events.{command}_failed",
                logging.WARNING,
                channel=name,
                error=type(exc).__name__,
            )
            return False
        return True

    async def _read(self) -> None:
        while True:
            try:
                if self._listeners.keys() - self._heard:
                    async with self._lock:
                        await self._subscribe_listeners()
                    if self._listeners.keys() - self._heard:
                        await asyncio.sleep(1.0)  # Redis is down: each try logs, so not faster
                        continue
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.2)
                    continue
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except (RedisError, OSError) as exc:
                log_event(logger, "events.pubsub_failed", logging.WARNING, error=type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            name = message["channel"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            listener = self._listeners.get(name)
            feed = self._feeds.get(name.removeprefix(CHANNEL_PREFIX))
            if listener is None and feed is None:
                continue
            try:
                notice = json.loads(message["data"])
            except ValueError:
                continue
            if not isinstance(notice, dict):
                continue
            if listener is not None:
                listener(notice)
            elif feed is not None:
                feed.notice(notice)

    async def close(self) -> None:
        tasks = [feed.stop() for feed in self._feeds.values()]
        await asyncio.gather(*tasks)
        self._feeds.clear()
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader
        with suppress(RedisError, OSError):
            await self._pubsub.aclose()
