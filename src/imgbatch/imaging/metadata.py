"""What the image says about itself: EXIF (read before it is stripped), a dominant colour and a
BlurHash placeholder.

EXIF is read from the opened file before orientation is applied, because applying it removes
the Orientation tag. Nothing here may fail an image: a damaged EXIF block gives ``None`` fields.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from blurhash_rs import blurhash_encode
from PIL import ExifTags, Image

_T, _G = ExifTags.Base, ExifTags.GPS
_MAX_TEXT: Final = 128
_EXIF_DATETIME: Final = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET: Final = re.compile(r"^([+-])(\d{2}):(\d{2})$")
#: The side of the small copy the colour and the placeholder are computed from.
SUMMARY_EDGE: Final = 64
# A point sample this large carries the low frequencies a dominant colour and a 4x3 BlurHash
# describe; a box filter over the full image instead costs 3-25 ms per photo (4-16 MP, measured),
# 10-15 % of the whole default profile.
_SAMPLE_EDGE: Final = 256


@dataclass(frozen=True, slots=True)
class ExifInfo:
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    software: str | None = None
    taken_at: str | None = None  # ISO 8601; with an offset only if OffsetTimeOriginal says so
    orientation: int | None = None  # 1..8 as stored in the file
    has_gps: bool = False  # a usable position, not merely a GPS block
    latitude: float | None = None
    longitude: float | None = None

    @property
    def is_empty(self) -> bool:
        return self == ExifInfo()


def read_exif(image: Image.Image) -> ExifInfo | None:
    """From an opened image, before ``exif_transpose``; None when there is nothing to say."""
    try:
        exif = image.getexif()
    except Exception:  # damaged APP1 blocks raise struct.error, ValueError, SyntaxError...
        return None
    if not exif:
        return None
    exif_ifd = _ifd(exif, ExifTags.IFD.Exif)
    lat, lon = _gps(_ifd(exif, ExifTags.IFD.GPSInfo))
    orientation = exif.get(_T.Orientation)
    info = ExifInfo(
        make=_text(exif.get(_T.Make)),
        model=_text(exif.get(_T.Model)),
        lens=_text(exif_ifd.get(_T.LensModel)),
        software=_text(exif.get(_T.Software)),
        taken_at=_taken_at(exif_ifd),
        orientation=orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
        has_gps=lat is not None,
        latitude=lat,
        longitude=lon,
    )
    return None if info.is_empty else info


def _ifd(exif: Image.Exif, ifd: ExifTags.IFD) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(ifd))
    except Exception:  # bad offsets, truncated IFDs
        return {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):  # UNDEFINED-typed tags, some Windows tools
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.split("\x00", 1)[0].strip()  # C strings: NUL ends them, padding follows
    value = "".join(ch for ch in value if ch.isprintable())
    return value[:_MAX_TEXT] or None


def _taken_at(exif_ifd: dict[int, Any]) -> str | None:
    for stamp_tag, offset_tag in (
        (_T.DateTimeOriginal, _T.OffsetTimeOriginal),
        (_T.DateTimeDigitized, _T.OffsetTimeDigitized),
    ):
        match = _EXIF_DATETIME.match(_text(exif_ifd.get(stamp_tag)) or "")
        if not match:
            continue  # missing, blank or "0000:00:00 00:00:00"
        try:
            year, month, day, hour, minute, second = (int(part) for part in match.groups())
            # No zone: EXIF stores local time; an offset is attached below if the file has one.
            taken = datetime(year, month, day, hour, minute, second)
        except ValueError:
            continue  # month 13, Feb 30
        offset = _EXIF_OFFSET.match(_text(exif_ifd.get(offset_tag)) or "")
        if offset:
            delta = timedelta(hours=int(offset[2]), minutes=int(offset[3]))
            if delta <= timedelta(hours=14):
                taken = taken.replace(tzinfo=timezone(-delta if offset[1] == "-" else delta))
        return taken.isoformat()
    return None


def _gps(gps: dict[int, Any]) -> tuple[float | None, float | None]:
    lat = _degrees(gps.get(_G.GPSLatitude), gps.get(_G.GPSLatitudeRef), "S", 90)
    lon = _degrees(gps.get(_G.GPSLongitude), gps.get(_G.GPSLongitudeRef), "W", 180)
    if lat is None or lon is None or (lat == 0 and lon == 0):  # 0,0 is "no fix" on many phones
        return None, None
    return lat, lon


def _degrees(dms: Any, ref: Any, negative: str, limit: float) -> float | None:
    if not isinstance(dms, tuple) or not 1 <= len(dms) <= 3:
        return None
    try:
        parts = [float(part) for part in dms]  # IFDRational(x, 0) is NaN, not an error
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(p) and p >= 0 for p in parts):
        return None
    value: float = sum(part / 60**i for i, part in enumerate(parts))
    if value > limit:
        return None
    ref_text = _text(ref)
    return round(-value if ref_text and ref_text[:1].upper() == negative else value, 7)


def fit_within(size: tuple[int, int], long_edge: int) -> tuple[int, int]:
    """The same aspect ratio with the long side at most ``long_edge``; never upscales."""
    width, height = size
    if max(width, height) <= long_edge:
        return width, height
    if width >= height:
        return long_edge, max(1, round(height * long_edge / width))
    return max(1, round(width * long_edge / height)), long_edge


def summary_image(rgb: Image.Image) -> Image.Image:
    """A small RGB copy (long side :data:`SUMMARY_EDGE`) for the colour and the placeholder."""
    sample = rgb.resize(fit_within(rgb.size, _SAMPLE_EDGE), Image.Resampling.NEAREST)
    small = sample.resize(fit_within(sample.size, SUMMARY_EDGE), Image.Resampling.BOX)
    if small is not sample:
        sample.close()
    return small


def dominant_color(small: Image.Image) -> str:
    """The most common colour as ``#rrggbb``: FASTOCTREE, 5 colours, the biggest bucket.

    Not the mean colour, which is often one that appears nowhere in the photo; MEDIANCUT was
    5-40x slower and changed its answer with the input size.
    """
    palette_image = small.quantize(colors=5, method=Image.Quantize.FASTOCTREE)
    try:
        counts: list[tuple[int, int]] = palette_image.getcolors(5) or [(0, 0)]  # type: ignore[assignment]
        _count, index = max(counts)
        palette = palette_image.getpalette() or [0, 0, 0]
        red, green, blue = palette[3 * index : 3 * index + 3]
    finally:
        palette_image.close()
    return f"#{red:02x}{green:02x}{blue:02x}"


def placeholder(small: Image.Image) -> str:
    """A 4x3-component BlurHash: a ~30-character string a page paints before the image."""
    return blurhash_encode(small, 4, 3)
