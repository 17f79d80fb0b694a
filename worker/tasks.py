"""Celery tasks: thin wrappers that take ids, re-fetch state and call the domain code.

Every task is idempotent, which is what makes ``acks_late`` safe: a message delivered twice
does the same work twice and changes nothing the second time.
"""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from webhooks.events import publish_request_event
from worker.app import (
    DISPATCH_TASK,
    PRODUCTS_TASK,
    RECONCILE_TASK,
    REQUEST_FINISHED_TASK,
    RETENTION_TASK,
    celery_app,
)
from worker.dispatch import dispatch_request as _dispatch_request
from worker.products import process_products as _process_products
from worker.reconcile import reconcile as _reconcile
from worker.retention import expire_requests as _expire_requests
from worker.runtime import runtime

logger = logging.getLogger(__name__)

# A database outage is not the image's fault: retry the whole task later instead of failing it.
_TRANSIENT = (PyMongoError, ConnectionError)
_RETRY = {
    "autoretry_for": _TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 20,
}


@celery_app.task(name=DISPATCH_TASK, acks_late=True, **_RETRY)
def dispatch_request(request_id: str) -> None:
    rt = runtime()
    rt.run(_dispatch_request(rt, request_id))


@celery_app.task(name=PRODUCTS_TASK, acks_late=True, **_RETRY)
def process_products(request_id: str, serial_numbers: list[int]) -> None:
    rt = runtime()
    rt.run(_process_products(rt, request_id, serial_numbers))


@celery_app.task(name=REQUEST_FINISHED_TASK, acks_late=True, **_RETRY)
def request_finished(request_id: str) -> None:
    rt = runtime()
    rt.run(publish_request_event(rt, request_id))


@celery_app.task(name=RECONCILE_TASK, acks_late=True, **_RETRY)
def reconcile() -> int:
    rt = runtime()
    return rt.run(_reconcile(rt))


@celery_app.task(name=RETENTION_TASK, acks_late=True, **_RETRY)
def expire_requests() -> int:
    rt = runtime()
    return rt.run(_expire_requests(rt))
