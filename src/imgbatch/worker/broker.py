"""The task processes' Redis transport: kombu's own, made to survive losing its broker connection.

kombu 5.7.0 and Celery 5.7.0 are the newest releases (uv.lock); neither fixes this. When a worker
loses Redis, Celery collects the lost connection: kombu closes its channels one by one, and
closing a channel restores the messages it held, which needs Redis. Redis being down, the first
restore raises, and the channels after it stay open. kombu then drops the transport's link to
its connection (``Transport.client = None``). Celery goes on to close the connection, and with it
a channel left open; a task that finishes in the pool later acknowledges its message on its old
channel. Each builds a Redis client from ``Transport.client`` and raises ``AttributeError:
'NoneType' object has no attribute 'hostname'`` (seen in the Redis fault test's worker log,
raised from ``on_connection_error_after_connected``). That is not one of the connection errors
Celery ignores there, so the worker logs "Unrecoverable error" and exits
(tests/worker/test_broker.py reproduces it).

Two changes make the loss recoverable:

- **Restoring held messages while Redis is down is deferred, not fatal**, so every channel
  closes. The messages stay in Redis's unacknowledged set, and any worker's periodic scan puts
  them back in their queues once the visibility timeout has passed. If Redis came back empty,
  they are gone with it, and the reconciler re-enqueues their products from MongoDB.
- **The transport keeps its connection's parameters after the close.** A late acknowledgement
  then reaches Redis again, or fails with a real connection error, which Celery logs and
  survives.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

from imgbatch.core.logs import log_event

logger = logging.getLogger(__name__)

# For Celery's ``broker_transport``: the URL still says redis://, and this class serves it.
TRANSPORT = f"{__name__}:Transport"


class QoS(redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except self.channel.connection_errors as exc:
            log_event(logger, "broker.restore_deferred", logging.WARNING, error=repr(exc))


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
    _kept_client: Any = None

    @property
    def client(self) -> Any:
        return self._kept_client

    @client.setter
    def client(self, value: Any) -> None:
        # kombu sets None when it closes the connection; its channels still need the parameters.
        if value is not None:
            self._kept_client = value
