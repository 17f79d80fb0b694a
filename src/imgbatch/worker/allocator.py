"""glibc malloc settings for a process that churns through multi-megabyte buffers.

A worker process allocates and frees a few large buffers per image: the downloaded body, the
decoded pixels, the encoded output. With glibc's defaults, buffers above a (sliding) threshold
are fresh ``mmap`` regions, so every image's bytes land in new pages the kernel must fault in
and zero; that cost 1.5 ms of the 3.5 ms of CPU a 1.6 MB download took (bench/README.md).
Serving those sizes from the heap, and keeping a bounded amount of freed heap, reuses pages.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Final

from imgbatch.core.logs import log_event

__all__ = ["reuse_large_buffers"]

logger = logging.getLogger(__name__)

# mallopt() parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8

_MiB: Final = 1024 * 1024
# Larger than a 16 MP RGB image (48 MB), so no per-image buffer is an mmap of its own.
_MMAP_THRESHOLD: Final = 64 * _MiB
# The most freed memory a process keeps for the next image before giving it back.
_TRIM_THRESHOLD: Final = 64 * _MiB
# Decodes run one at a time per process (runtime.decode_slot), on whichever executor thread is
# free; one arena keeps the reusable pages in one place instead of one copy per thread.
_ARENAS: Final = 1


def reuse_large_buffers() -> bool:
    """Apply the settings to this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and other C libraries: their allocators need no such help
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = all(
        mallopt(option, value) == 1
        for option, value in (
            (_M_ARENA_MAX, _ARENAS),
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
        )
    )
    log_event(logger, "worker.malloc_tuned", applied=applied)
    return applied
