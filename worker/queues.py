"""Enqueueing by task name, so the API can send work without importing task code."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from worker.app import (
    DISPATCH_TASK,
    PRODUCT_TASK,
    REQUEST_FINISHED_TASK,
    WEBHOOK_DELIVER_TASK,
)


class TaskQueue:
    def __init__(self, app: Celery) -> None:
        self._app = app

    def dispatch(self, request_id: str) -> None:
        self._app.send_task(DISPATCH_TASK, args=[request_id])

    def products(self, request_id: str, serial_numbers: Iterable[int]) -> int:
        sent = 0
        # One producer (and one connection) for the whole fan-out, instead of one per message.
        with self._app.producer_or_acquire() as producer:
            for serial_number in serial_numbers:
                self._app.send_task(
                    PRODUCT_TASK, args=[request_id, serial_number], producer=producer
                )
                sent += 1
        return sent

    def request_finished(self, request_id: str) -> None:
        self._app.send_task(REQUEST_FINISHED_TASK, args=[request_id])

    def webhook_deliveries(self, delivery_ids: Iterable[str]) -> int:
        sent = 0
        with self._app.producer_or_acquire() as producer:
            for delivery_id in delivery_ids:
                self._app.send_task(WEBHOOK_DELIVER_TASK, args=[delivery_id], producer=producer)
                sent += 1
        return sent
