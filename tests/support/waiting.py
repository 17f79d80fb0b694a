"""Waiting on conditions, never on sleeps: a busy machine makes a fixed sleep too short."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from imgbatch.cli.stack import Stack
from imgbatch.domain.taskqueue import ALL_QUEUES


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "", every: float = 0.05
) -> None:
    """Return once ``condition()`` holds, looking ``every`` seconds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def broker_idle(stack: Stack) -> bool:
    """No message waits in any queue and none is held unacknowledged by a worker: every task
    sent so far has run to its end."""
    assert stack.redis_url
    broker = redis.Redis.from_url(stack.redis_url)
    waiting = sum(messages_waiting(broker, queue) for queue in ALL_QUEUES)
    return waiting == 0 and int(broker.hlen("unacked")) == 0


def messages_waiting(broker: redis.Redis, queue: str) -> int:
    """Messages in ``queue`` at any priority (Redis keeps a list per priority)."""
    return sum(int(broker.llen(key)) for key in [queue, *(f"{queue}:{p}" for p in range(1, 10))])
