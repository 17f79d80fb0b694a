"""The Celery application: explicit queues and settings chosen so that no work is lost.

- ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged only after its task ran,
  so a killed worker's task is delivered again. Every image task is idempotent, which is what
  makes late acknowledgement safe.
- prefetch 1: a worker holds one message per process, so a crash strands at most that many and
  a long product never sits behind another in a worker's buffer.

Task names, queues and routes come from :mod:`domain.taskqueue`, which senders use too. The
webhook tasks (``webhooks.tasks``) run in the same app; they are included by name, so the
worker never imports the webhooks package.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue

# Before anything that counts: it checks prometheus_client came up in multiprocess mode.
import imgbatch.core.metrics  # noqa: F401
from imgbatch.core.settings import Settings, get_settings
from imgbatch.domain import runtime
from imgbatch.domain.taskqueue import (
    ALL_QUEUES,
    IMAGES_QUEUE,
    RECONCILE_TASK,
    RETENTION_TASK,
    WEBHOOK_DUE_TASK,
    broker_config,
)
from imgbatch.worker import exporter, observability
from imgbatch.worker.broker import TRANSPORT
from imgbatch.worker.runtime import WorkerRuntime


def create_celery(settings: Settings) -> Celery:
    app = Celery("imgbatch", include=["imgbatch.worker.tasks", "imgbatch.webhooks.tasks"])
    app.conf.update(
        broker_config(settings),
        # kombu's Redis transport, fixed so that losing Redis never kills a worker (broker.py).
        broker_transport=TRANSPORT,
        # However long Redis is away, wait for it (Celery gives up after 100 attempts, ~45 min).
        broker_connection_max_retries=None,
        # A task running when Redis goes away finishes its work: its acknowledgement reaches
        # Redis once it is back, or its message is delivered again and the rerun finds the work
        # done. Stated, because Celery 6 turns the default around (cancel them all).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue=IMAGES_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval_seconds,
                # Every few seconds: one that waited past the next is superseded by it, so busy
                # pool processes do not come back to a pile of them.
                "options": {"expires": settings.reconcile_interval_seconds},
            },
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
observability.setup(celery_app)
exporter.setup()
# Every task in this process, webhook tasks included, shares the worker's runtime.
runtime.install(WorkerRuntime.build)
