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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.logs import log_event
from core.settings import Settings
from models.products import ImageError, ProductStatus

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "imgbatch:events:"

PRODUCT = "product"
STATUS = "status"
PROGRESS = "progress"


def channel(request_id: str) -> str:
    return f"{CHANNEL_PREFIX}{request_id}"


class EventPublisher(Protocol):
    async def publish(self, request_id: str, notice: dict[str, Any]) -> None: ...


class RedisEventPublisher:
    """Publishes on the request's channel; a Redis error is logged and swallowed (see above)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisEventPublisher:
        return cls(Redis.from_url(settings.require_redis_url()))

    async def publish(self, request_id: str, notice: dict[str, Any]) -> None:
        try:
            await self._redis.publish(channel(request_id), json.dumps(notice))
        except (RedisError, OSError) as exc:
            log_event(
                logger,
                "events.publish_failed",
                logging.WARNING,
                request_id=request_id,
                error=type(exc).__name__,
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
    await events.publish(request_id, {"kind": STATUS, "status": str(status)})


async def progress_moved(events: EventPublisher, request_id: str) -> None:
    await events.publish(request_id, {"kind": PROGRESS})
