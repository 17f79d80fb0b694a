"""Live progress notices: published to Redis pub/sub beside every place a request's state moves.

One channel per request (:func:`channel`). A notice is a hint, not the record: the API process
that fans events out to browsers re-reads the request from MongoDB when one arrives, and also
every few seconds without one, because pub/sub drops messages whenever nobody is listening or a
connection blips. So publishing never raises: a lost notice only delays a progress bar.

Notices (JSON objects, field ``kind``):

- ``product``: a product reached its final state; carries what the stream's ``product`` event
  needs (serial number, status, output storage keys, errors), so nobody has to read it back.
- ``status``: the request's status changed (started, completed, failed, cancelled, retried).
- ``progress``: counters moved without a product finishing (a recount).

Beside them, one channel every API process listens to, :data:`CHANGES_CHANNEL`, says what its
caches must forget (``{"kind": "request", "request_id": ...}`` with every status change, and
``{"kind": "key_revoked", "key_id": ...}``). Those caches also expire on their own within a
second or so, which is the guarantee; the notice only makes it sooner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from imgbatch.core.logs import log_event
from imgbatch.core.settings import Settings
from imgbatch.models.products import ImageError, ProductStatus

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "imgbatch:events:"

PRODUCT = "product"
STATUS = "status"
PROGRESS = "progress"

CHANGES_CHANNEL = "imgbatch:changes"
REQUEST_CHANGED = "request"
KEY_REVOKED = "key_revoked"


def channel(request_id: str) -> str:
    return f"{CHANNEL_PREFIX}{request_id}"


class EventPublisher(Protocol):
    async def publish(
        self, request_id: str, notice: dict[str, Any], *, change: dict[str, Any] | None = None
    ) -> None:
        """``notice`` on the request's channel, and ``change`` (if any) on CHANGES_CHANNEL."""


class RedisEventPublisher:
    """Publishes on the request's channel; a Redis error is logged and swallowed (see above)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisEventPublisher:
        return cls(Redis.from_url(settings.require_redis_url()))

    async def publish(
        self, request_id: str, notice: dict[str, Any], *, change: dict[str, Any] | None = None
    ) -> None:
        messages = [(channel(request_id), notice)]
        if change is not None:
            messages.append((CHANGES_CHANNEL, change))
        await self._send(messages, request_id=request_id)

    async def announce(self, change: dict[str, Any]) -> None:
        """``change`` on CHANGES_CHANNEL only."""
        await self._send([(CHANGES_CHANNEL, change)])

    async def _send(self, messages: list[tuple[str, dict[str, Any]]], **context: str) -> None:
        try:
            if len(messages) == 1:
                await self._redis.publish(messages[0][0], json.dumps(messages[0][1]))
                return
            # One round trip: a status change is on the path of cancel and retry.
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, message in messages:
                    pipe.publish(name, json.dumps(message))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log_event(
                logger,
                "events.publish_failed",
                logging.WARNING,
                error=type(exc).__name__,
                **context,
            )


async def product_finished(
    events: EventPublisher,
    request_id: str,
    serial_number: int,
    status: ProductStatus,
    output_keys: Sequence[str | None],
    errors: Sequence[ImageError],
) -> None:
    await events.publish(
        request_id,
        {
            "kind": PRODUCT,
            "serial_number": serial_number,
            "status": str(status),
            "output_keys": list(output_keys),
            "errors": [error.model_dump() for error in errors],
        },
    )


async def status_changed(events: EventPublisher, request_id: str, status: str) -> None:
    await events.publish(
        request_id,
        {"kind": STATUS, "status": str(status)},
        change={"kind": REQUEST_CHANGED, "request_id": request_id},
    )


async def progress_moved(events: EventPublisher, request_id: str) -> None:
    await events.publish(request_id, {"kind": PROGRESS})


async def key_revoked(events: RedisEventPublisher, key_id: str) -> None:
    await events.announce({"kind": KEY_REVOKED, "key_id": key_id})
