"""Enqueueing by task name, so the API can send work without importing task code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from celery import Celery

from models.requests import Priority
from worker.app import (
    DISPATCH_TASK,
    PRODUCTS_TASK,
    REQUEST_FINISHED_TASK,
    WEBHOOK_DELIVER_TASK,
)

# Redis serves lower numbers first. The first products of every request go at their class's
# priority and the rest a step lower, so a 3-image request overtakes the tail of a 30k-image
# batch of the same class instead of waiting for all of it (FIFO would starve it).
_HEAD_PRODUCTS = 20
_BASE_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}
_TAIL_PENALTY = 2
DISPATCH_PRIORITY = 0


def product_priority(priority: Priority, position: int) -> int:
    return _BASE_PRIORITY[priority] + (_TAIL_PENALTY if position >= _HEAD_PRODUCTS else 0)


class TaskQueue:
    def __init__(self, app: Celery) -> None:
        self._app = app

    def dispatch(self, request_id: str) -> None:
        self._app.send_task(DISPATCH_TASK, args=[request_id], priority=DISPATCH_PRIORITY)

    def products(
        self,
        request_id: str,
        serial_numbers: Sequence[int],
        priority: Priority = Priority.NORMAL,
        per_task: int = 1,
    ) -> int:
        """Enqueue the products in tasks of ``per_task``; returns how many products were sent."""
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

    def request_finished(self, request_id: str) -> None:
        self._app.send_task(REQUEST_FINISHED_TASK, args=[request_id])

    def webhook_deliveries(self, delivery_ids: Iterable[str]) -> int:
        sent = 0
        with self._app.producer_or_acquire() as producer:
            for delivery_id in delivery_ids:
                self._app.send_task(WEBHOOK_DELIVER_TASK, args=[delivery_id], producer=producer)
                sent += 1
        return sent
