"""The Celery application: explicit queues and settings chosen so that no work is lost.

- ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged only after its task ran,
  so a killed worker's task is delivered again. Every task here is idempotent, which is what
  makes late acknowledgement safe.
- prefetch 1: a worker holds one message per process, so a crash strands at most that many and
  a long product never sits behind another in a worker's buffer.
"""

from __future__ import annotations

import logging

from celery import Celery
from kombu.entity import Queue

from models.settings import Settings, get_settings

DISPATCH_QUEUE = "imgbatch.dispatch"
IMAGES_QUEUE = "imgbatch.images"
WEBHOOKS_QUEUE = "imgbatch.webhooks"
MAINTENANCE_QUEUE = "imgbatch.maintenance"
ALL_QUEUES = (DISPATCH_QUEUE, IMAGES_QUEUE, WEBHOOKS_QUEUE, MAINTENANCE_QUEUE)
# A hanging webhook receiver must never hold a process that images need: separate workers.
PROCESSING_QUEUES = (DISPATCH_QUEUE, IMAGES_QUEUE, MAINTENANCE_QUEUE)

DISPATCH_TASK = "imgbatch.dispatch_request"
PRODUCTS_TASK = "imgbatch.process_products"
REQUEST_FINISHED_TASK = "imgbatch.request_finished"
RECONCILE_TASK = "imgbatch.reconcile"
RETENTION_TASK = "imgbatch.expire_requests"
WEBHOOK_DELIVER_TASK = "imgbatch.webhooks.deliver"
WEBHOOK_DUE_TASK = "imgbatch.webhooks.deliver_due"


def create_celery(settings: Settings) -> Celery:
    app = Celery("imgbatch", broker=settings.redis_url, include=["worker.tasks", "webhooks.tasks"])
    app.conf.update(
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue=IMAGES_QUEUE,
        task_routes={
            DISPATCH_TASK: {"queue": DISPATCH_QUEUE},
            PRODUCTS_TASK: {"queue": IMAGES_QUEUE},
            REQUEST_FINISHED_TASK: {"queue": WEBHOOKS_QUEUE},
            RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
            RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
            WEBHOOK_DELIVER_TASK: {"queue": WEBHOOKS_QUEUE},
            WEBHOOK_DUE_TASK: {"queue": WEBHOOKS_QUEUE},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # A message whose worker died is redelivered once it has been unacknowledged for
        # visibility_timeout; the scan for such messages runs every restore interval (the
        # throttle of 1 makes the interval the real period instead of interval x 10).
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout,
            "unacked_restore_interval": settings.broker_restore_interval_seconds,
            "unacked_restore_throttle": 1,
            # Ten priority levels, served lowest number first (see worker/queues.py).
            "priority_steps": list(range(10)),
            "sep": ":",
        },
        worker_hijack_root_logger=False,
        beat_schedule={
            "reconcile": {"task": RECONCILE_TASK, "schedule": settings.reconcile_interval_seconds},
            "retention": {
                "task": RETENTION_TASK,
                "schedule": settings.retention_interval_seconds,
                "options": {"expires": settings.retention_interval_seconds},
            },
            # Retries live in MongoDB as next_attempt_at; this poll turns due ones into messages.
            "webhook-deliveries": {
                "task": WEBHOOK_DUE_TASK,
                "schedule": settings.webhook_poll_interval_seconds,
                # A poll that waited longer than one interval is superseded by the next one, so
                # a stopped worker does not come back to a pile of them.
                "options": {"expires": settings.webhook_poll_interval_seconds},
            },
        },
    )
    return app


celery_app = create_celery(get_settings())
# httpx logs every request at INFO; a worker's log should say what happened to images instead.
logging.getLogger("httpx").setLevel(logging.WARNING)
