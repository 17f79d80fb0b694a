"""Sending work to the task processes: the one small interface the API and the tasks share.

Tasks are sent **by name** with a bare Celery producer, so a sender never imports a task module
or the worker's Celery app (which would build the whole worker configuration in the API). The
names, queues and routes live here, below both sides: the worker registers its tasks under
these names, and a sender needs nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from celery import Celery
from pymongo.errors import PyMongoError
from redis.asyncio import Redis

from imgbatch.core.settings import Settings
from imgbatch.models.requests import Priority
from imgbatch.storage import StorageUnavailable

DISPATCH_QUEUE = "imgbatch.dispatch"
IMAGES_QUEUE = "imgbatch.images"
WEBHOOKS_QUEUE = "imgbatch.webhooks"
MAINTENANCE_QUEUE = "imgbatch.maintenance"
ALL_QUEUES = (DISPATCH_QUEUE, IMAGES_QUEUE, WEBHOOKS_QUEUE, MAINTENANCE_QUEUE)
# A hanging webhook receiver must never hold a process that images need: separate workers.
PROCESSING_QUEUES = (DISPATCH_QUEUE, IMAGES_QUEUE, MAINTENANCE_QUEUE)

# The task processes' Celery app, for the command lines that start them (the embedded stack,
# `python -m imgbatch.worker`, Flower): spelled once, so a deployment cannot start another.
CELERY_APP = "imgbatch.worker.app:celery_app"


def celery_args(command: str, *args: str) -> list[str]:
    """The arguments after the interpreter that start ``celery <command>`` on our app."""
    # --quiet: no ASCII banner; it goes to stdout unlogged, and every line should be an event.
    return ["-m", "celery", "-A", CELERY_APP, "--quiet", command, *args]


def worker_args(queues: Sequence[str], pool: str, concurrency: int, log_level: str) -> list[str]:
    """``celery worker`` on ``queues``, as every deployment starts it."""
    return celery_args(
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        log_level,
        # No peer chatter between workers: nothing here uses it, and it costs every worker a
        # message per event of every other one.
        "--without-gossip",
        "--without-mingle",
    )


DISPATCH_TASK = "imgbatch.dispatch_request"
PRODUCTS_TASK = "imgbatch.process_products"
REQUEST_FINISHED_TASK = "imgbatch.request_finished"
RECONCILE_TASK = "imgbatch.reconcile"
RETENTION_TASK = "imgbatch.expire_requests"
WEBHOOK_DELIVER_TASK = "imgbatch.webhooks.deliver"
WEBHOOK_DUE_TASK = "imgbatch.webhooks.deliver_due"

TASK_ROUTES: dict[str, dict[str, str]] = {
    DISPATCH_TASK: {"queue": DISPATCH_QUEUE},
    PRODUCTS_TASK: {"queue": IMAGES_QUEUE},
    REQUEST_FINISHED_TASK: {"queue": WEBHOOKS_QUEUE},
    RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
    RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
    WEBHOOK_DELIVER_TASK: {"queue": WEBHOOKS_QUEUE},
    WEBHOOK_DUE_TASK: {"queue": WEBHOOKS_QUEUE},
}

# Redis serves lower numbers first. The first products of every request go at their class's
# priority and the rest a step lower, so a 3-image request overtakes the tail of a 30k-image
# batch of the same class instead of waiting for all of it (FIFO would starve it).
_HEAD_PRODUCTS = 20
_BASE_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}
_TAIL_PENALTY = 2
DISPATCH_PRIORITY = 0
# kombu keeps a queue in one Redis list per priority step: the bare name for step 0, then
# ``name:1`` ... ``name:9`` (a priority between steps goes to the step below it).
PRIORITY_STEPS = tuple(range(10))
PRIORITY_SEP = ":"
# Long enough for every reply: kombu waits on the reply list in 1 s polls, and a call that gives
# up sooner leaves a poll behind that swallows the next call's replies (measured: a third lost).
PING_TIMEOUT = 1.0


# A database, broker or object-store outage is not the work's fault: a task retries itself later
# instead of failing what it was doing. Backoff up to 10 s, so work resumes within seconds of the
# outage's end; 60 retries ride out several minutes of outage (jitter halves the waits on
# average).
RETRY_ON_OUTAGE: dict[str, Any] = {
    "autoretry_for": (PyMongoError, ConnectionError, StorageUnavailable),
    "retry_backoff": 2,
    "retry_backoff_max": 10,
    "retry_jitter": True,
    "max_retries": 60,
}


def product_priority(priority: Priority, position: int) -> int:
    return _BASE_PRIORITY[priority] + (_TAIL_PENALTY if position >= _HEAD_PRODUCTS else 0)


def broker_config(settings: Settings) -> dict[str, Any]:
    """What producers and consumers must agree on: routes, serialisation, priority lists."""
    return {
        "broker_url": settings.redis_url,
        "task_routes": TASK_ROUTES,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        # A message whose worker died is redelivered once it has been unacknowledged for
        # visibility_timeout; the scan for such messages runs every restore interval (the
        # throttle of 1 makes the interval the real period instead of interval x 10).
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            "unacked_restore_interval": settings.broker_restore_interval_seconds,
            "unacked_restore_throttle": 1,
            # Ten priority levels, served lowest number first (see product_priority).
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEP,
        },
    }


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


async def queue_depths(redis: Redis, queues: Sequence[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each queue (not those a worker holds): one round trip to Redis."""
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            for key in queue_keys(queue):
                pipe.llen(key)
        lengths = await pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {
        queue: sum(int(n) for n in lengths[i * steps : (i + 1) * steps])
        for i, queue in enumerate(queues)
    }


class TaskSender(Protocol):
    """Everything anyone sends to the task processes.

    Awaitable because a send is blocking network I/O (and blocks for seconds when the broker is
    down): it runs on a thread, never on the caller's event loop.
    """

    async def dispatch(self, request_id: str) -> None: ...

    async def products(
        self,
        request_id: str,
        serial_numbers: Sequence[int],
        priority: Priority = Priority.NORMAL,
        per_task: int = 1,
    ) -> int: ...

    async def request_finished(self, request_id: str) -> None: ...

    async def webhook_deliveries(self, delivery_ids: Iterable[str]) -> int: ...

    async def workers_alive(self) -> list[str]:
        """The names of the workers that answer a ping (waits up to about a second)."""
        ...


class CeleryTaskSender:
    """:class:`TaskSender` over a Celery producer that knows task names, not task code."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryTaskSender:
        app = Celery("imgbatch-sender", set_as_current=False)
        app.conf.update(broker_config(settings))
        return cls(app)

    async def dispatch(self, request_id: str) -> None:
        await asyncio.to_thread(
            self._app.send_task, DISPATCH_TASK, args=[request_id], priority=DISPATCH_PRIORITY
        )

    async def products(
        self,
        request_id: str,
        serial_numbers: Sequence[int],
        priority: Priority = Priority.NORMAL,
        per_task: int = 1,
    ) -> int:
        """Enqueue the products in tasks of ``per_task``; returns how many products were sent."""
        return await asyncio.to_thread(
            self._send_products, request_id, serial_numbers, priority, per_task
        )

    def _send_products(
        self, request_id: str, serial_numbers: Sequence[int], priority: Priority, per_task: int
    ) -> int:
        # One producer (and one connection) for the whole fan-out, instead of one per message.
        with self._app.producer_or_acquire() as producer:
            for start in range(0, len(serial_numbers), per_task):
                self._app.send_task(
                    PRODUCTS_TASK,
                    args=[request_id, list(serial_numbers[start : start + per_task])],
                    producer=producer,
                    priority=product_priority(priority, start),
                )
        return len(serial_numbers)

    async def request_finished(self, request_id: str) -> None:
        await asyncio.to_thread(self._app.send_task, REQUEST_FINISHED_TASK, args=[request_id])

    async def webhook_deliveries(self, delivery_ids: Iterable[str]) -> int:
        return await asyncio.to_thread(self._send_deliveries, list(delivery_ids))

    async def workers_alive(self) -> list[str]:
        # Blocking for up to PING_TIMEOUT, so on a thread: never on the caller's event loop.
        replies = await asyncio.to_thread(self._app.control.ping, timeout=PING_TIMEOUT)
        return sorted(name for reply in replies for name in reply)

    def _send_deliveries(self, delivery_ids: list[str]) -> int:
        sent = 0
        with self._app.producer_or_acquire() as producer:
            for delivery_id in delivery_ids:
                self._app.send_task(WEBHOOK_DELIVER_TASK, args=[delivery_id], producer=producer)
                sent += 1
        return sent
