"""The download budget: how many bytes of downloaded bodies one worker process may hold at once.

A process works on ``PRODUCTS_PER_TASK x PRODUCT_IMAGE_CONCURRENCY`` (64) downloads at once, and
every body waits in memory for the process's single decode slot, so without a bound 64 bodies of
25 MB would be 1.6 GB. A download reserves its bytes here after the response headers and before
it reads the body, and holds them until its image has been compressed.

How much a download reserves, and why it cannot deadlock:

* With a ``Content-Length`` (and no ``Content-Encoding``): exactly that many bytes; HTTP framing
  stops the body there.
* Without one (chunked, or compressed so the decoded size is unknown): ``MAX_IMAGE_BYTES`` up
  front, trimmed to the real size once the body is read. Reserving in increments as it streams
  would hold less for a moment, but then several half-read bodies can each hold part of the
  budget while waiting for more, and none ever finishes. Whole reservations never wait while
  holding anything, so every holder is reading a body (bounded by the download deadline) or
  waiting for the decode slot (whose holder needs no budget), and the budget always comes back.
* A reservation larger than the whole budget is granted when nothing else is held: the image
  proceeds alone rather than never. So a process holds at most
  ``max(DOWNLOAD_BUDGET_BYTES, MAX_IMAGE_BYTES)`` of bodies (plus, for a moment, the copy that
  joins one body's chunks).

Waiters are served first come, first served, so a large body is not starved by small ones.
Hand-written because asyncio's semaphores count slots, not bytes, and none of the usual
libraries (anyio's ``CapacityLimiter``, ``aiolimiter``) reserves a variable amount either.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["BudgetLease", "DownloadBudget"]


class DownloadBudget:
    """Bytes of downloaded bodies one process may hold; one per process, used by one loop."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.held = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def lease(self) -> BudgetLease:
        """A lease for one image's body: reserve, trim, and release on every path."""
        return BudgetLease(self)

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.capacity or self.held == 0

    async def _acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self.held += size
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(size)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._grant()  # it may have been the head that held others back
            raise

    def _release(self, size: int) -> None:
        self.held -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            size, waiter = self._waiters[0]
            if not self._fits(size):
                return
            self._waiters.popleft()
            self.held += size
            waiter.set_result(None)


class BudgetLease:
    """The bytes one image's body holds in a :class:`DownloadBudget`."""

    def __init__(self, budget: DownloadBudget) -> None:
        self._budget = budget
        self.held = 0

    async def reserve(self, size: int) -> None:
        """Wait until ``size`` more bytes may be held. Call with nothing held (see above)."""
        await self._budget._acquire(size)
        self.held += size

    def trim(self, size: int) -> None:
        """Keep at most ``size`` bytes; the rest goes back to waiting downloads at once."""
        excess = self.held - max(size, 0)
        if excess > 0:
            self.held -= excess
            self._budget._release(excess)

    def release(self) -> None:
        self.trim(0)
