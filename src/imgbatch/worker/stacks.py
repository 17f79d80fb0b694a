"""What a pool process is waiting on: ``kill -USR2 <pid>`` logs every coroutine's await chain.

A run that holds products and renews their leases but never finishes them is alive to the
reconciler, so nothing takes its work over: the one way to see where it waits is from inside.
Python's ``faulthandler`` (and Celery's ``SIGUSR1`` dump in the main process) show threads,
and a pool process's one thread sits in the event loop's ``select``; asyncio's
``Task.get_stack`` gives one frame of a suspended task. So the chain is walked here, through
``cr_await``, to the future at its end. Logged as one ``worker.tasks_dumped`` event.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

from imgbatch.core.logs import log_event
from imgbatch.domain.runtime import current_loop

logger = logging.getLogger(__name__)

_DEPTH = 30  # frames of one chain: enough for a run's deepest await (~12), bounded for safety


def install() -> None:
    """In a pool process: dump its coroutines on SIGUSR2."""
    signal.signal(signal.SIGUSR2, _on_signal)


def _on_signal(_: int, __: FrameType | None) -> None:
    loop = current_loop()
    if loop is None:
        log_event(logger, "worker.tasks_dumped", tasks=[])
    elif loop.is_running():
        # From the loop itself: a signal handler may run in the middle of the loop's own code.
        loop.call_soon_threadsafe(_dump, loop)
    else:
        _dump(loop)  # between tasks: nothing of the loop runs


def _dump(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [
        {"task": task.get_name(), "awaits": await_chain(task.get_coro())}
        for task in asyncio.all_tasks(loop)
    ]
    log_event(logger, "worker.tasks_dumped", tasks=tasks)


def await_chain(awaitable: Any) -> list[str]:
    """``file:line function`` of each coroutine a suspended one awaits, down to what it waits
    on at the end (a future, a lock's waiter, a sleep)."""
    chain: list[str] = []
    current = awaitable
    while current is not None and len(chain) < _DEPTH:
        frame = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None)
        frame = frame or getattr(current, "gi_frame", None)
        if frame is None:
            chain.append(repr(current)[:200])  # the future (or task) at the end of the chain
            break
        code = frame.f_code
        chain.append(f"{code.co_filename}:{frame.f_lineno} {code.co_name}")
        current = (
            getattr(current, "cr_await", None)
            or getattr(current, "ag_await", None)
            or getattr(current, "gi_yieldfrom", None)
        )
    return chain
