"""Who holds a product's lease, and whether that holder is gone.

A lease runs out only a while after its holder died; on the holder's own host its death is
seen at once: the process named in the lease no longer exists (or its pid now belongs to another
process), or it is this very process and the run that claimed the product has ended. A holder
on another host is gone when its lease runs out: a live run renews it every third of a lease,
whatever its downloads are waiting on, so only a dead (or wholly stuck) run lets it lapse.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache

import psutil

from imgbatch.models.products import LeaseHolder, ProductRecord

# Claim tokens of the runs at work in this process (a thread pool runs several at once).
_active: set[str] = set()
# Two readings of one process's start time differ by less than this; a reused pid by more.
_SAME_START = 1.0


@cache
def _host() -> str:
    # The hostname alone is not enough: two containers may share one, yet not their pids.
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


@cache
def _holder(pid: int) -> LeaseHolder:
    return LeaseHolder(host=_host(), pid=pid, started=psutil.Process(pid).create_time())


def this_process() -> LeaseHolder:
    """This process, as its leases name it (cached by pid: a forked child is another one)."""
    return _holder(os.getpid())


@contextlib.contextmanager
def running(token: str) -> Iterator[None]:
    """While a run with this claim token is at work in this process."""
    _active.add(token)
    try:
        yield
    finally:
        _active.discard(token)


def holder_gone(product: ProductRecord) -> bool:
    """Whether the process holding the product's lease is known to be dead (or, if it is this
    process, whether the run that claimed it is over). Unknown on another host: False."""
    holder = product.holder
    if holder is None or holder.host != _host():
        return False
    if holder == this_process():
        return product.claim not in _active
    try:
        process = psutil.Process(holder.pid)
        # A killed child stays a zombie until its parent reaps it: dead all the same.
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return bool(abs(process.create_time() - holder.started) > _SAME_START)
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False  # it exists; another user's process cannot be ours to judge


def abandoned(product: ProductRecord, at: datetime | None = None) -> bool:
    """Whether a ``processing`` product's run is over: its lease ran out, or its holder is gone."""
    until = product.lease_until
    if until is None or until <= (at or datetime.now(UTC)):
        return True
    return holder_gone(product)
