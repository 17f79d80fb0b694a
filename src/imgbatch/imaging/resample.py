"""Downscaling: Pillow's ``reduce`` for the integer part of a scale, libvips' Lanczos-3 the rest.

Measured (bench/README.md, "Round five", item 5; one core, CPU of every thread):

- **The rest of a scale is the costly part** where it is not an integer (3000 -> 1500 -> 1200 px
  of a 6 MP photo). Pillow's resamplers are plain C, one pixel at a time: 20 ms of BICUBIC,
  26 of LANCZOS for that step. libvips' Lanczos-3 is vectorised: 9.5 ms, the copies of the
  pixels into libvips and back included, and a higher SSIM than Pillow's BICUBIC on every
  storefront size (the 6 MP ``large`` 0.880 against 0.875, the 12 MP one 0.887 against 0.880).
- **The integer part stays Pillow's** ``reduce(k)`` (a box filter in C, what JPEG's DCT scaling
  does, per axis as Pillow's own ``reducing_gap=1.0`` does): it also shrinks what is copied
  into libvips, from the full decode to at most twice the target on each axis.
- **Where the integer part does not divide the size**, Pillow does the rest too (BICUBIC, as
  before): ``reduce()`` then leaves a partial box at the edge, which Pillow resamples exactly
  and libvips would fit to whole pixels (see :func:`downscale`). Common camera sizes divide
  (4032x3024, 6000x4000, 3000x2000 by their factor for 1200 px); 4000x3000 does not.
- **Sources of at most 600x600** (the thumbnail step) stay Pillow's, LANCZOS with a gap of 2.0
  (~1 dB for ~1 ms). libvips would save at most ~1 ms there (a call has ~0.6 ms of fixed cost),
  and its Lanczos-3 over the whole of a large scale in one pass shifts flat colours (a flat
  200 came out 197 at 600 -> 16 px: its fixed-point weights no longer sum to one).

libvips only ever sees raw pixels of an image Pillow decoded (``new_from_memory``): none of its
loaders parses a byte from the network, so it adds no decoder to the attack surface.
"""

from __future__ import annotations

import os
from typing import Any, Final

from PIL import Image

_SMALL_SOURCE: Final = 600 * 600
# One byte per band: what the decoded chain is (imaging.decode makes every image RGB).
_BYTE_MODES: Final = frozenset({"L", "RGB", "RGBA"})
_vips: Any = None
_started_in: int | None = None  # the process that started libvips


def downscale(source: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``source`` at ``size`` (never larger than it); ``source`` itself if it is that size."""
    if source.size == size:
        return source
    if source.width * source.height <= _SMALL_SOURCE:
        return source.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    factors = (max(1, source.width // size[0]), max(1, source.height // size[1]))
    if source.width % factors[0] or source.height % factors[1]:
        # reduce() leaves a partial box at the edge, less than a pixel of the source. Pillow
        # resamples the rest from a fractional box, exactly; libvips fits whole pixels to the
        # target and spreads the difference over both edges, a shift of up to half a pixel
        # that costs SSIM (0.922 against 0.925 for a 4000 px photo's 1200 px size).
        return source.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)
    reduced = source.reduce(factors) if factors != (1, 1) else source
    if reduced.size == size:
        return reduced
    try:
        return _lanczos(reduced, size)
    finally:
        if reduced is not source:
            reduced.close()


def _lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.mode not in _BYTE_MODES:
        raise ValueError(f"downscale takes 8-bit L, RGB or RGBA images, not {image.mode}")
    vips = _library()
    bands = len(image.getbands())
    pixels = vips.Image.new_from_memory(image.tobytes(), image.width, image.height, bands, "uchar")
    # No gap: the scale left after reduce() is between 1 and 2, all of it Lanczos-3. Each side
    # comes out as round(side / shrink): exactly the target (tests/imaging/test_resample.py).
    scaled = pixels.reduce(image.width / size[0], image.height / size[1], kernel="lanczos3")
    return Image.frombytes(image.mode, size, scaled.write_to_memory())


def _library() -> Any:
    """libvips, started in this process at its first resize.

    Not at import: Celery forks its pool processes from a parent that imported this module, and
    a library's threads do not survive a fork. A process forked after libvips started would
    wait for ever on threads it does not have, so it gets an error instead. One thread per
    operation, because a worker already renders one image per core; no operation cache,
    because each image is resized once and the cache would only hold on to its pixels.
    """
    global _vips, _started_in
    if _vips is None:
        import pyvips  # type: ignore[import-untyped]

        pyvips.concurrency_set(1)
        pyvips.cache_set_max(0)
        _vips, _started_in = pyvips, os.getpid()
    elif _started_in != os.getpid():
        raise RuntimeError(
            "libvips was started in a parent of this process before it forked; start it only "
            "after forking (imaging.resample)"
        )
    return _vips
