"""Celery tasks: thin wrappers that take ids, re-fetch state and call the domain code.

Every task is idempotent, which is what makes ``acks_late`` safe: a message delivered twice
does the same work twice and changes nothing the second time.
"""

from __future__ import annotations

from imgbatch.domain.taskqueue import (
    DISPATCH_TASK,
    PRODUCTS_TASK,
    RECONCILE_TASK,
    RETENTION_TASK,
    RETRY_ON_OUTAGE,
)
from imgbatch.worker.app import celery_app
from imgbatch.worker.dispatch import dispatch_request as _dispatch_request
from imgbatch.worker.products import process_products as _process_products
from imgbatch.worker.reconcile import reconcile as _reconcile
from imgbatch.worker.retention import expire_requests as _expire_requests
from imgbatch.worker.runtime import worker_runtime


@celery_app.task(name=DISPATCH_TASK, acks_late=True, **RETRY_ON_OUTAGE)
def dispatch_request(request_id: str) -> None:
    rt = worker_runtime()
    rt.run(_dispatch_request(rt, request_id))


@celery_app.task(name=PRODUCTS_TASK, acks_late=True, **RETRY_ON_OUTAGE)
def process_products(request_id: str, serial_numbers: list[int]) -> None:
    rt = worker_runtime()
    rt.run(_process_products(rt, request_id, serial_numbers))


@celery_app.task(name=RECONCILE_TASK, acks_late=True, **RETRY_ON_OUTAGE)
def reconcile() -> int:
    rt = worker_runtime()
    return rt.run(_reconcile(rt))


@celery_app.task(name=RETENTION_TASK, acks_late=True, **RETRY_ON_OUTAGE)
def expire_requests() -> int:
    rt = worker_runtime()
    return rt.run(_expire_requests(rt))
