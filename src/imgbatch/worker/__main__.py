"""``python -m imgbatch.worker images|webhooks``: a Celery worker as deployed (docker-compose's
worker services), its queues, pool and concurrency taken from the code and the settings instead
of being spelled out in each deployment file.

- ``images``: the dispatch, images and maintenance queues, ``IMGBATCH_WORKER_CONCURRENCY``
  processes.
- ``webhooks``: the webhooks queue, ``IMGBATCH_WEBHOOK_WORKER_CONCURRENCY`` threads (an attempt
  waits on the network, so a hanging receiver holds a thread, not a process).

With ``PROMETHEUS_MULTIPROC_DIR`` set, that directory is emptied first: a restarted container
keeps its filesystem, and the last run's counters would otherwise be summed in. The process then
becomes Celery (exec), so the container's stop signal reaches Celery itself and its warm
shutdown. Arguments after the kind are passed to ``celery worker`` as they are.
"""

from __future__ import annotations

import argparse
import os
import sys

from imgbatch.core.settings import Settings, get_settings, metrics_multiprocess_dir
from imgbatch.domain.taskqueue import PROCESSING_QUEUES, WEBHOOKS_QUEUE, worker_args


def celery_command(kind: str, settings: Settings, extra: list[str]) -> list[str]:
    """The ``celery worker`` command line for a worker of ``kind``."""
    queues: tuple[str, ...]
    if kind == "images":
        queues, pool, concurrency = PROCESSING_QUEUES, "prefork", settings.worker_concurrency
    else:
        queues, pool = (WEBHOOKS_QUEUE,), "threads"
        concurrency = settings.webhook_worker_concurrency
    return [
        sys.executable,
        *worker_args(queues, pool, concurrency, settings.log_level),
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m imgbatch.worker",
        description="Start a Celery worker for image tasks or webhook deliveries, with the "
        "queues, pool and concurrency its kind needs. Further arguments go to 'celery worker'.",
    )
    parser.add_argument("kind", choices=["images", "webhooks"])
    args, extra = parser.parse_known_args(argv)
    directory = metrics_multiprocess_dir()
    if directory is not None:
        # Imported only now: prometheus_client must first see the variable, which it has.
        from imgbatch.core.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(directory)
    command = celery_command(args.kind, get_settings(), extra)
    os.execv(command[0], command)  # noqa: S606 (our own interpreter, arguments we built)


if __name__ == "__main__":
    main()
