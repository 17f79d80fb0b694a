"""Give the C heap's free pages back to the system after a large body is gone.

glibc keeps freed memory in its heap for reuse. A worker process streams up to 64 bodies at
once, and their network reads (a few hundred KB each, allocated and freed in every order) leave
live pieces scattered through the heap, so the space of bodies already compressed is neither
reused in time nor returned. Measured with 64 bodies of 20 MB in one process
(tests/worker/test_safety.py): peak RSS 461-502 MB, and 370-420 MB still held once the batch
was done, while live Python objects were down to 4 MB. Trimming after each large body: peak
421-480 MB, and ~123 MB once done. ``malloc_trim`` walks the free lists and releases whole free
pages; it cost 0.02-0.3 ms here, so it runs only after bodies of ``TRIM_AFTER_BYTES`` or more.

``worker/allocator.py`` keeps up to 64 MB of freed heap for the next image's buffers, which
saves page faults on ordinary photos; this gives everything back only after an exceptionally
large body, where the kept space was the problem.

Hand-written because no library exposes it: it is one glibc call through ctypes. Where the C
library is not glibc (musl, macOS) there is no such function, and this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["TRIM_AFTER_BYTES", "trim_after"]

# Below this a body's space is reused by the next downloads soon enough; typical catalogue
# photos (1-6 MB) never pay for a trim.
TRIM_AFTER_BYTES = 8 * 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    # The symbols the process already has (the C library's among them): no library search,
    # which on Linux may start ldconfig or a compiler.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def trim_after(released: int) -> None:
    """Call once a body of ``released`` bytes has been dropped."""
    if _TRIM is not None and released >= TRIM_AFTER_BYTES:
        _TRIM(0)
