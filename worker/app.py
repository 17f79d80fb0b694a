"""The Celery application: explicit queues and settings chosen so that no work is lost.

- ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged only after its task ran,
  so a killed worker's task is delivered again. Every task here is idempotent, which is what
  makes late acknowledgement safe.
- prefetch 1: a worker holds one message per process, so a crash strands at most that many and
  a long product never sits behind another in a worker's buffer.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue

from models.settings import Settings, get_settings

DISPATCH_QUEUE = "imgbatch.dispatch"
IMAGES_QUEUE = "imgbatch.images"
WEBHOOKS_QUEUE = "imgbatch.webhooks"
MAINTENANCE_QUEUE = "imgbatch.maintenance"
ALL_QUEUES = (DISPATCH_QUEUE, IMAGES_QUEUE, WEBHOOKS_QUEUE, MAINTENANCE_QUEUE)

DISPATCH_TASK = "imgbatch.dispatch_request"
PRODUCT_TASK = "imgbatch.process_product"
REQUEST_FINISHED_TASK = "imgbatch.request_finished"
RECONCILE_TASK = "imgbatch.reconcile"


def create_celery(settings: Settings) -> Celery:
    app = Celery("imgbatch", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue=IMAGES_QUEUE,
        task_routes={
            DISPATCH_TASK: {"queue": DISPATCH_QUEUE},
            PRODUCT_TASK: {"queue": IMAGES_QUEUE},
            REQUEST_FINISHED_TASK: {"queue": WEBHOOKS_QUEUE},
            RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
        worker_hijack_root_logger=False,
        beat_schedule={
            "reconcile": {"task": RECONCILE_TASK, "schedule": settings.reconcile_interval_seconds},
        },
    )
    return app


celery_app = create_celery(get_settings())
