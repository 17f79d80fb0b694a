"""A worker's broker channels outlive a lost Redis connection. The test follows the order in which
Celery's consumer handles the loss: it collects the connection, then closes the channels the
collect left open. Against the real embedded Redis, killed while the worker holds messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection, Queue
from kombu.common import ignore_errors
from kombu.transport.virtual import Channel

from imgbatch.cli.embedded import EmbeddedRedis
from imgbatch.worker.broker import TRANSPORT
from tests.support.waiting import wait_until


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


def _holding(connection: Connection, queue: Queue) -> Channel:
    """A channel of its own (as Celery's task consumer has) holding one message: delivered and
    not yet acknowledged (``acks_late``)."""
    channel = connection.channel()
    assert queue(channel).get(no_ack=False) is not None
    return channel


def test_losing_redis_while_holding_messages_leaves_every_channel_closable(
    redis_server: EmbeddedRedis,
) -> None:
    queue = Queue("imgbatch.test-held")
    connection = Connection(redis_server.url, transport=TRANSPORT)
    with connection.Producer() as producer:
        for product in (1, 2):
            producer.publish({"product": product}, routing_key=queue.name, declare=[queue])
    consuming = _holding(connection, queue)
    _holding(connection, queue)
    redis_server.stop(kill=True)
    # What Celery's consumer does on a connection error (on_connection_error_after_connected).
    # With kombu's own transport the first channel's restore fails, leaves the other one open,
    # and closing that one later raises AttributeError ('NoneType' object has no attribute
    # 'hostname'), which ends the worker with "Unrecoverable error".
    connection.collect(socket_timeout=5)
    ignore_errors(connection, connection.close)
    consuming.close()
    assert consuming.closed
    # Redis back on its port: a new connection works as before.
    restarted = EmbeddedRedis(redis_server.data_dir, port=redis_server.port).start()
    try:
        wait_until(lambda: _loaded(restarted), what="Redis to load its append-only file")
        with Connection(restarted.url, transport=TRANSPORT) as fresh:
            with fresh.Producer() as producer:
                producer.publish({"product": 3}, routing_key=queue.name, declare=[queue])
            message = queue(fresh.default_channel).get(no_ack=True)
            assert message is not None
            assert message.payload["product"] in (1, 2, 3)
    finally:
        restarted.stop()


def _loaded(server: EmbeddedRedis) -> bool:
    try:
        return bool(redis.Redis.from_url(server.url).ping())
    except redis.BusyLoadingError:
        return False
