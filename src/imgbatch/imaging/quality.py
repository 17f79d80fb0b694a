"""Catalogue-quality checks: what a storefront or marketplace is likely to reject in a photo.

Two measures are taken on the small summary image the dominant colour and the BlurHash already
use (``metadata.summary_image``, long edge 64 px), so they cost tens of microseconds, not a pass
over the full image:

- **sharpness**: the variance of a 3x3 Laplacian over the grey summary. A focused photo keeps
  strong edges even at 64 px; a blurred or badly upscaled one has almost none.
- **white border**: the share of the summary's outer ring of pixels whose every channel is at
  least :data:`WHITE_LEVEL`, i.e. near white. A product cut out on white scores ~1.0.

The measures describe the image, whatever the profile: they are stored with its outputs (and
reused with them). The warnings come from comparing them, and the source size, with the
thresholds of the request's profile (:class:`Checks`), so a profile change never needs a
re-render. A warning never fails an image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageFilter, ImageStat

#: A channel value at or above this counts as white (JPEG noise on a white sweep is ~245-255).
WHITE_LEVEL: Final = 235
_LAPLACIAN: Final = ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), scale=1, offset=128)
_RING: Final = 2  # pixels of the summary's edge that count as its border


@dataclass(frozen=True, slots=True)
class Measures:
    sharpness: float
    white_border: float


def measure(small: Image.Image) -> Measures:
    """The measures of one RGB summary image."""
    grey = small.convert("L")
    try:
        # The offset keeps negative responses; a clipped extreme edge only lowers the variance
        # of an image that is sharp anyway.
        edges = grey.filter(_LAPLACIAN)
        # Pillow leaves the outermost pixels of a filtered image unfiltered: left in, they
        # would count the border's brightness as edges.
        width, height = edges.size
        inner = edges.crop((1, 1, width - 1, height - 1)) if min(width, height) > 2 else edges
        sharpness = ImageStat.Stat(inner).var[0]
        inner.close()
        edges.close()
    finally:
        grey.close()
    return Measures(round(sharpness, 1), round(_white_border(small), 3))


def _white_border(small: Image.Image) -> float:
    # Each channel to 255 if near white, else 0; the grey conversion of that is 255 only where
    # all three are (its weights add up to 1), so the border's bin 255 counts white pixels.
    white = small.point(_WHITE_LUT).convert("L")
    try:
        histogram = white.histogram(mask=_ring(small.size))
    finally:
        white.close()
    total = sum(histogram)
    return histogram[255] / total if total else 1.0


_WHITE_LUT: Final = [255 if value >= WHITE_LEVEL else 0 for value in range(256)] * 3


@functools.lru_cache(maxsize=64)
def _ring(size: tuple[int, int]) -> Image.Image:
    """The summary's outer :data:`_RING` pixels as a mask (summaries come in few sizes)."""
    width, height = size
    mask = Image.new("L", size, 255)
    if width > 2 * _RING and height > 2 * _RING:
        mask.paste(0, (_RING, _RING, width - _RING, height - _RING))
    return mask


@dataclass(frozen=True, slots=True)
class Checks:
    """A profile's thresholds. ``None`` turns a check off."""

    #: ``too_small``: the source's long edge is under this many pixels.
    min_long_edge: int | None = 800
    #: ``blurry``: the summary's Laplacian variance is under this.
    min_sharpness: float | None = 100.0
    #: ``extreme_aspect``: the long edge is more than this many times the short one.
    max_aspect: float | None = 3.0
    #: ``not_white_background``: less than this share of the border is near white. Off by
    #: default: only a marketplace's main image must be on white.
    min_white_border: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_long_edge", "min_sharpness", "max_aspect", "min_white_border"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"checks.{name} must be a positive number or null")
        if self.min_white_border is not None and self.min_white_border > 1:
            raise ValueError("checks.min_white_border is a share of the border: 0-1")
        if self.max_aspect is not None and self.max_aspect < 1:
            raise ValueError("checks.max_aspect must be at least 1")


@dataclass(frozen=True, slots=True)
class QualityWarning:
    code: str
    message: str


# Messages hold no ";": the result CSV's Warnings cell joins them with "; ".
def assess(
    checks: Checks, width: int, height: int, measures: Measures | None
) -> list[QualityWarning]:
    """The warnings for an image of ``width`` x ``height`` (as displayed) with these measures
    (None: outputs made before they were taken; only the size checks apply)."""
    warnings: list[QualityWarning] = []
    long_edge, short_edge = max(width, height), max(1, min(width, height))
    if checks.min_long_edge is not None and long_edge < checks.min_long_edge:
        warnings.append(
            QualityWarning(
                "too_small",
                f"the long edge is {long_edge} px, under {checks.min_long_edge} px",
            )
        )
    if checks.max_aspect is not None and long_edge / short_edge > checks.max_aspect:
        warnings.append(
            QualityWarning(
                "extreme_aspect",
                f"{width}x{height} is {long_edge / short_edge:.1f}:1, over {checks.max_aspect:g}:1",
            )
        )
    if measures is None:
        return warnings
    if checks.min_sharpness is not None and measures.sharpness < checks.min_sharpness:
        warnings.append(
            QualityWarning(
                "blurry",
                f"sharpness {measures.sharpness:g} is under {checks.min_sharpness:g} "
                "(Laplacian variance of a 64 px copy)",
            )
        )
    if checks.min_white_border is not None and measures.white_border < checks.min_white_border:
        warnings.append(
            QualityWarning(
                "not_white_background",
                f"{measures.white_border:.0%} of the border is near white, under "
                f"{checks.min_white_border:.0%}",
            )
        )
    return warnings
