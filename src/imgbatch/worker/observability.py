"""Celery's side of logging: structured lines from every worker, pool and beat process, each line
of a task about a request carrying that request's id.

Connected at import by :mod:`worker.app`. Metrics need nothing here: prometheus_client notices
a fork by itself and each pool process writes its own files (see :mod:`core.metrics`).
"""

from __future__ import annotations

import ast
import logging
from typing import Any

from celery import Celery, signals
from structlog.typing import EventDict, WrappedLogger

from imgbatch.core.logs import bind_context, clear_context, configure_logging
from imgbatch.core.settings import get_settings
from imgbatch.domain.taskqueue import DISPATCH_TASK, PRODUCTS_TASK, REQUEST_FINISHED_TASK
from imgbatch.worker import stacks

# Tasks whose first argument is the id of the request they work on.
REQUEST_TASKS = frozenset({DISPATCH_TASK, PRODUCTS_TASK, REQUEST_FINISHED_TASK})


def _request_of_task_line(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Celery's own "Task ...[id] received" line is logged by the worker's main process, outside
    any task, but its ``data`` names the task and its arguments: take the request id from there.
    """
    data = event.get("data")
    if "request_id" in event or not isinstance(data, dict) or data.get("name") not in REQUEST_TASKS:
        return event
    try:
        args = ast.literal_eval(str(data.get("args", "")))  # Celery's repr of the arguments
    except (ValueError, SyntaxError):
        return event
    if isinstance(args, list | tuple) and args and isinstance(args[0], str):
        event["request_id"] = args[0]
    return event


def setup(app: Celery) -> None:
    settings = get_settings()

    def configure(level: str) -> None:
        configure_logging(level, settings.log_format, extra=[_request_of_task_line])

    # Now, at import: warnings Celery emits before it sets logging up are structured too.
    configure(settings.log_level)

    @signals.setup_logging.connect(weak=False)
    def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
        # Connected, this replaces Celery's own logging set-up entirely (handlers and all).
        level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
        configure(str(level or settings.log_level))
        # Celery redirects print() and stray stderr output only when it sets logging up itself.
        app.log.redirect_stdouts_to_logger(logging.getLogger("celery.redirected"), logging.WARNING)

    @signals.worker_process_init.connect(weak=False)
    def _pool_process(**_: Any) -> None:
        stacks.install()  # kill -USR2 <pool pid>: where its coroutines wait

    @signals.task_prerun.connect(weak=False)
    def _bind_task(task_id: str | None = None, task: Any = None, args: Any = (), **_: Any) -> None:
        clear_context()  # a pool process runs one task after another in one context
        fields: dict[str, Any] = {"task": getattr(task, "name", None), "task_id": task_id}
        if fields["task"] in REQUEST_TASKS and args:
            fields["request_id"] = args[0]
        bind_context(**fields)

    @signals.task_postrun.connect(weak=False)
    def _unbind_task(**_: Any) -> None:
        clear_context()
