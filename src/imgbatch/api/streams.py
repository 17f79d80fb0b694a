"""How many event streams one API process serves, and how often a client may resume one.

Each stream holds a connection, a file descriptor and a subscription for as long as
``IMGBATCH_EVENTS_MAX_SECONDS``, and each resume may replay finished products: unbounded, one
tenant could run a process out of descriptors or CPU (issue 22). Counted per process, in memory:

- per owner (API key): ``events_streams_per_owner`` open at once, ``events_resumes_per_minute``
  opened with a ``Last-Event-ID``; past either a 429 with ``Retry-After``;
- per process, whoever owns them: ``events_streams_per_process``; past it a 503 with
  ``Retry-After`` (another process behind the balancer may have room).

With ``IMGBATCH_AUTH_DISABLED`` every caller is the one local owner, so only the per-process cap
applies.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from imgbatch.core.errors import ImgbatchError
from imgbatch.core.settings import Settings

_RESUME_WINDOW = 60.0
# A stream slot frees when a client goes; a few seconds is a fair time to come back.
_STREAMS_RETRY_AFTER = 5


class TooManyStreams(ImgbatchError):
    status_code = 429
    description = (
        "Too many event streams open, or resumed in the last minute, for this API key on this "
        "API process; retry after Retry-After seconds"
    )


class StreamsBusy(ImgbatchError):
    status_code = 503
    description = (
        "This API process holds as many event streams as it may (or MongoDB or Redis is "
        "unavailable); retry after Retry-After seconds"
    )


class Ticket:
    """One admitted stream; :meth:`release` gives its slot back, once however often called."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def bind(self, owner_of_slot: object) -> None:
        """Release when ``owner_of_slot`` (the stream's generator) is collected, for a response
        whose body was never iterated (the client left before it started) and so never ran the
        generator's ``finally``."""
        weakref.finalize(owner_of_slot, self.release)


@dataclass
class StreamLimits:
    settings: Settings
    clock: Callable[[], float] = time.monotonic
    _open: Counter[str] = field(default_factory=Counter)
    _resumes: dict[str, deque[float]] = field(default_factory=dict)

    @property
    def open_streams(self) -> int:
        return self._open.total()

    def admit(self, owner: str, *, resuming: bool) -> Ticket:
        """A slot for one more stream of ``owner``'s, or the 429 or 503 that says when to
        come back."""
        per_owner = not self.settings.auth_disabled
        if self.open_streams >= self.settings.events_streams_per_process:
            raise StreamsBusy(
                "this API process serves as many event streams as it may",
                headers={"Retry-After": str(_STREAMS_RETRY_AFTER)},
            )
        if per_owner and self._open[owner] >= self.settings.events_streams_per_owner:
            raise TooManyStreams(
                f"at most {self.settings.events_streams_per_owner} event streams per API key",
                headers={"Retry-After": str(_STREAMS_RETRY_AFTER)},
            )
        if per_owner and resuming:
            self._count_resume(owner)
        self._open[owner] += 1
        return Ticket(lambda: self._close(owner))

    def _count_resume(self, owner: str) -> None:
        now = self.clock()
        recent = self._resumes.setdefault(owner, deque())
        while recent and recent[0] <= now - _RESUME_WINDOW:
            recent.popleft()
        if len(recent) >= self.settings.events_resumes_per_minute:
            wait = math.ceil(recent[0] + _RESUME_WINDOW - now)
            raise TooManyStreams(
                f"at most {self.settings.events_resumes_per_minute} resumed event streams per "
                "API key and minute",
                headers={"Retry-After": str(max(1, wait))},
            )
        recent.append(now)

    def _close(self, owner: str) -> None:
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]
        recent = self._resumes.get(owner)
        if recent is not None and not self._open.get(owner):
            # Forgotten with the owner's last stream only once its window has passed.
            while recent and recent[0] <= self.clock() - _RESUME_WINDOW:
                recent.popleft()
            if not recent:
                del self._resumes[owner]
