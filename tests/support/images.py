"""Images made at test time in Python: big bodies and pathological files, never checked in."""

from __future__ import annotations

import io

from PIL import Image

# A DHT with one AC code ("0" = EOB14, an end-of-band run) and a scan of component 1 over the
# whole AC band that uses it. The scan carries no data: libjpeg pads the missing bits with zeros,
# reads them as end-of-band runs and so visits every luma block again without changing a pixel.
# libjpeg only warns ("bogus progression"), and Pillow drops the warning.
_EOB_RUN_TABLE = b"\xff\xc4\x00\x14\x13" + bytes([1] + [0] * 15) + b"\xe0"
_EMPTY_AC_SCAN = b"\xff\xda\x00\x08\x01\x01\x03\x01\x3f\x00"


def progressive_jpeg(side: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(
        out, "JPEG", progressive=True
    )
    return out.getvalue()


def many_scan_jpeg(scans: int, side: int = 2000) -> bytes:
    """A valid progressive JPEG with ``scans`` extra do-nothing scans: each costs a pass over
    every block, so decoding takes ``scans`` times the work of one pass (~0.07 ms per scan per
    megapixel), and a few hundred KB can hold a decoder for minutes."""
    base = progressive_jpeg(side)
    assert base.endswith(b"\xff\xd9")
    return base[:-2] + _EOB_RUN_TABLE + _EMPTY_AC_SCAN * scans + b"\xff\xd9"


def padded_jpeg(size: int) -> bytes:
    """A valid small JPEG followed by zeros up to ``size``: a big body that decodes cheaply."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue().ljust(size, b"\0")
