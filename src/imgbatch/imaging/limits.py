"""Caps on decoding work, so that no file can hold a worker process for as long as it likes.

The pixel cap bounds the memory a decode takes, not its time. The time of a JPEG decode grows
with its scans too: each scan of a progressive (or multi-scan) file is a pass over every block,
a scan can be 10 bytes with no data, and libjpeg only warns about scans that repeat. So 485 KB
with 10,000 such scans over 49 MP took 35 s of CPU (measured; /work/notes/imaging.md section 8).
Two caps, both failing the image with ``decode_timeout``:

* :func:`check_jpeg_scans`, before decoding: a JPEG with more than ``max_scans`` scans (libjpeg
  writes 10 for a progressive colour file, 6 for gray; libjpeg-turbo's fuzzers allow 500) is
  refused. With 100, the worst left is ~0.4 s of extra decode at 50 MP. Cost on normal files:
  a baseline file whose first scan holds every component (nearly every JPEG on the web) is
  known to be single-scan from its headers, a few microseconds; other files have their entropy
  data skipped by one C regex search per scan, about 0.5 ms per MB.
* :class:`DeadlineReader`, during decoding: Pillow's decoders pull their input in chunks
  (``decodermaxblock``, 64 KB) through ``read()``, so a reader that checks the CPU time this
  thread has spent stops any chunked decoder (JPEG, PNG, GIF, TIFF, BMP) at the next chunk past
  the budget. CPU time, not the clock: a busy machine must not fail good images. One
  ``time.thread_time()`` call per 64 KB read costs nothing measurable. WebP and AVIF decode the
  whole file in one call; the pixel cap bounds them.

Why not a separate, killable decode process: it is the only hard stop, but it costs a second
interpreter per worker process and a copy of every input and output (measured +8 ms on a 30 ms
4 MP image), for a case these two caps already cover.
"""

from __future__ import annotations

import io
import re
import time
from typing import Final

from imgbatch.core.errors import ImageErrorCode, ImageFailure

__all__ = ["DeadlineReader", "check_jpeg_scans", "count_jpeg_scans"]

# The end of an entropy-coded segment: 0xFF followed by anything but a stuffed 0x00, a restart
# marker (which stays inside the segment) or fill.
_ENTROPY_END: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Baseline and extended sequential Huffman frames: with every component in the first scan,
# libjpeg decodes them in one pass and refuses a second scan ("EOI expected").
_SEQUENTIAL_FRAMES: Final = frozenset({0xC0, 0xC1})
# SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_FRAMES: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS: Final = 0xDA
_EOI: Final = 0xD9


def count_jpeg_scans(data: bytes, *, limit: int) -> int:
    """Scans (SOS markers) of the JPEG's own stream, counting no further than ``limit + 1``.

    Marker segments are walked by their lengths, so a thumbnail inside APP1 (a whole JPEG with
    its own SOS) is skipped, unlike with ``data.count(b"\\xff\\xda")``.
    """
    end = len(data)
    pos, scans = 2, 0
    frame: int | None = None
    components = 0
    while pos + 4 <= end:
        if data[pos] != 0xFF:  # junk between segments: find the next marker
            found = _ENTROPY_END.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _EOI:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn and TEM have no length
            pos += 2
            continue
        body = pos + 4
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if marker in _FRAMES and body + 6 <= end:
            frame, components = marker, data[body + 5]
        elif marker == _SOS:
            scans += 1
            single_pass = frame in _SEQUENTIAL_FRAMES and body < end and data[body] == components
            if scans == 1 and single_pass:
                return 1  # one interleaved sequential scan: no second pass can follow
            if scans > limit:
                break
            found = _ENTROPY_END.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return scans


def check_jpeg_scans(data: bytes, max_scans: int) -> None:
    if count_jpeg_scans(data, limit=max_scans) > max_scans:
        raise ImageFailure(
            ImageErrorCode.DECODE_TIMEOUT,
            f"JPEG has more than {max_scans} scans; decoding it would take too long "
            f"(the limit is {max_scans} scans)",
        )


class DeadlineReader(io.BytesIO):
    """The bytes to decode, refusing to hand out more once ``seconds`` of this thread's CPU
    have gone since it was made. Make it in the thread that decodes.

    A ``BytesIO`` over ``bytes`` shares the buffer, so this copies nothing.
    """

    def __init__(self, data: bytes, seconds: float) -> None:
        super().__init__(data)
        self._seconds = seconds
        self._deadline = time.thread_time() + seconds

    def read(self, size: int | None = -1, /) -> bytes:
        if time.thread_time() > self._deadline:
            raise ImageFailure(
                ImageErrorCode.DECODE_TIMEOUT,
                f"decoding took more than {self._seconds:g} s of CPU; the image is too costly "
                "to decode",
            )
        return super().read(size)
