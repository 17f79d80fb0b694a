"""The supervisor of ``imgbatch run`` and ``imgbatch demo``: a child that exits unexpectedly is
started again, as it was, on the same port and over the same data.

Every child counts: the API, the workers, beat, and the embedded MongoDB-protocol server, Redis
and SeaweedFS. A restart waits 0.5 s after the first exit, doubling with each further exit that
came before the child had run for a minute, up to 10 s. Each restart is logged
(``stack.process_restarted``) and counted (``imgbatch_stack_restarts_total{process}`` on
``GET /metrics``). A child that exits 5 times in
60 s cannot be helped by restarting it: the supervisor gives up, and the stack stops with one
message naming the child, its exit code and the end of its log (:class:`CrashLoop`).

It runs in a thread beside whatever the main thread does (waiting for a signal in ``run``,
driving the sample batch in ``demo``); stopping it before the stack stops means no restart
races the shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Self

from imgbatch.cli.embedded import Managed
from imgbatch.cli.stack import Stack
from imgbatch.core.logs import log_event
from imgbatch.core.metrics import write_stack_restarts

logger = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW = 60.0
_POLL_INTERVAL = 0.1
_LOG_TAIL_LINES = 20


class CrashLoop(Exception):
    """A child kept exiting: restarting it again would only hide why."""

    def __init__(self, name: str, exit_code: int, exits: int, log: Path) -> None:
        self.name = name
        self.exit_code = exit_code
        self.log = log
        super().__init__(
            f"{name} exited {exits} times in {CRASH_LOOP_WINDOW:.0f}s, the last time with exit "
            f"code {exit_code}; stopping the stack. The last lines of {log}:\n{_tail(log)}"
        )


def _tail(log: Path) -> str:
    try:
        with log.open("rb") as handle:
            # The end of the file is enough: a crash-looping child's log can be long.
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError as exc:
        return f"  (unreadable: {exc})"
    return "\n".join(f"  {line}" for line in lines[-_LOG_TAIL_LINES:]) or "  (empty)"


class Supervisor(Managed):
    """Watches a started :class:`Stack`'s children; ``with`` starts and stops the watching."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.failure: CrashLoop | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._exits: dict[str, deque[float]] = {}
        # Exits in a row, each before the child had run for CRASH_LOOP_WINDOW: the backoff's
        # exponent. A child that exits now and then (below the crash-loop limit) but never stays
        # up long waits longer each time, up to BACKOFF_MAX.
        self._streak: dict[str, int] = {}
        self._started: dict[str, float] = {}
        # A child that ended and waits out its backoff: when it is due, and the code it ended with.
        self._due: dict[str, tuple[float, int]] = {}
        self.restarts = dict.fromkeys(self._names(), 0)

    def _names(self) -> list[str]:
        return [*self.stack.processes, *(service.name for service in self.stack.services)]

    def start(self) -> Self:
        self._started = dict.fromkeys(self.restarts, time.monotonic())
        # Every series from 0: a scrape sees the first restart as an increase.
        write_stack_restarts(self.stack.metrics_dir, self.restarts)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _watch(self) -> None:
        while not self._stopping.wait(_POLL_INTERVAL):
            now = time.monotonic()
            for name, code in self.stack.exited().items():
                if name not in self._due and not self._ended(name, code, now):
                    return
            for name, (due, code) in list(self._due.items()):
                if now >= due and not self._stopping.is_set():
                    del self._due[name]
                    self._restart(name, code)

    def _ended(self, name: str, code: int, now: float) -> bool:
        """Schedule the restart of a child that just ended; False when it is crash-looping."""
        exits = self._exits.setdefault(name, deque())
        exits.append(now)
        while exits and exits[0] < now - CRASH_LOOP_WINDOW:
            exits.popleft()
        if len(exits) >= CRASH_LOOP_EXITS:
            self.failure = CrashLoop(name, code, len(exits), self.stack.log_path(name))
            return False
        ran_long = now - self._started.get(name, now) >= CRASH_LOOP_WINDOW
        streak = 1 if ran_long else self._streak.get(name, 0) + 1
        self._streak[name] = streak
        backoff = min(BACKOFF_INITIAL * 2 ** (streak - 1), BACKOFF_MAX)
        self._due[name] = (now + backoff, code)
        return True

    def _restart(self, name: str, code: int) -> None:
        self.restarts[name] = self.restarts.get(name, 0) + 1
        write_stack_restarts(self.stack.metrics_dir, self.restarts)
        self._started[name] = time.monotonic()
        try:
            self.stack.restart(name)
        except Exception as exc:
            # It ended again (or never started): the next look counts that as another exit.
            log_event(logger, "stack.restart_failed", logging.ERROR, child=name, error=str(exc))
        log_event(
            logger,
            "stack.process_restarted",
            logging.WARNING,
            child=name,
            exit_code=code,
            restarts=self.restarts[name],
        )
