"""A worker's own ``/metrics``, for workers that run apart from the API (docker-compose).

Under ``imgbatch run`` every process of the stack counts into one multiprocess directory and
the API's ``GET /metrics`` sums them. A worker container has a directory of its own that no API
can read, so its main process serves it, as prometheus_client documents for multiprocess mode:
``start_http_server`` on a registry holding a ``MultiProcessCollector``. Prometheus scrapes
each worker container (docker/prometheus.yml).

Started when the worker is ready to take tasks, so a health check of the port also says the
worker is consuming. The server is a daemon thread of the main process; pool processes are
forked from it and inherit nothing but its (unused) listening socket.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from prometheus_client import start_http_server

from imgbatch.core.logs import log_event
from imgbatch.core.metrics import processes_registry
from imgbatch.core.settings import get_settings

logger = logging.getLogger(__name__)


def setup() -> None:
    port = get_settings().worker_metrics_port
    if port is None:
        return

    @signals.worker_ready.connect(weak=False)
    def _serve(sender: Any = None, **_: Any) -> None:
        # All interfaces: Prometheus reaches the container over the compose network.
        start_http_server(port, addr="0.0.0.0", registry=processes_registry())
        log_event(logger, "worker.metrics_served", port=port)
