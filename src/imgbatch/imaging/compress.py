"""Open untrusted bytes once (:func:`open_image`) and re-encode them as a metadata-free JPEG."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from imgbatch.core import metrics
from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.imaging.decode import (
    Decoded,
    check_pixels,
    corrupt,
    decode,
    too_many_pixels_from_pillow,
)
from imgbatch.imaging.limits import check_jpeg_scans
from imgbatch.imaging.sniff import SNIFF_BYTES, declared_size, describe_non_image, sniff_format


@dataclass(frozen=True, slots=True)
class CompressedImage:
    """The re-encoded image: JPEG bytes plus the displayed (post-rotation) dimensions."""

    data: bytes
    width: int
    height: int
    source_format: str


def compress_image(
    data: bytes,
    *,
    quality: int,
    max_pixels: int,
    optimize: bool = False,
    max_jpeg_scans: int = 100,
    decode_seconds: float = 5.0,
) -> CompressedImage:
    """Decode ``data`` and re-encode it as a metadata-free RGB JPEG at ``quality``.

    The output is what a viewer would show: EXIF orientation applied, transparency
    flattened onto white, the first frame of an animation. Camera metadata (EXIF, GPS, XMP,
    comments) is dropped; an RGB ICC profile is kept so colours do not shift. ``optimize``
    computes Huffman tables for this image: about 8 % fewer bytes for 1.9x the CPU.
    ``max_jpeg_scans`` and ``decode_seconds`` (CPU) cap the work of decoding
    (:mod:`imaging.limits`).

    Raises :class:`ImageFailure` with ``NOT_AN_IMAGE``, ``TOO_MANY_PIXELS``,
    ``DECODE_TIMEOUT`` or ``CORRUPT_IMAGE`` for bad input, and ``ValueError`` for out-of-range
    arguments (a caller bug, not a property of the image).
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    decoded = open_image(
        data,
        max_pixels=max_pixels,
        max_jpeg_scans=max_jpeg_scans,
        decode_seconds=decode_seconds,
    )
    try:
        return CompressedImage(
            data=encode_jpeg(
                decoded.image, quality=quality, optimize=optimize, icc_profile=decoded.icc_profile
            ),
            width=decoded.image.width,
            height=decoded.image.height,
            source_format=decoded.source_format,
        )
    finally:
        decoded.close()


def open_image(
    data: bytes,
    *,
    max_pixels: int,
    max_jpeg_scans: int = 100,
    decode_seconds: float = 5.0,
) -> Decoded:
    """Sniff, budget-check and decode ``data``: the one decode every output is made from.

    ``max_jpeg_scans`` and ``decode_seconds`` (CPU) cap the work of decoding
    (:mod:`imaging.limits`). Raises :class:`ImageFailure` with ``NOT_AN_IMAGE``,
    ``TOO_MANY_PIXELS``, ``DECODE_TIMEOUT`` or ``CORRUPT_IMAGE`` for bad input. The caller
    closes the result.
    """
    source_format = _checked_format(data, max_pixels, max_jpeg_scans)
    try:
        with metrics.IMAGE_PHASE_SECONDS.labels("decode").time():
            return decode(data, source_format, max_pixels, decode_seconds)
    except ImageFailure:
        raise
    except MemoryError:
        # Within the pixel budget this means the worker itself is starved; that is not the
        # image's fault, so let the task's crash handling see it.
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own process-wide backstop (2 x Image.MAX_IMAGE_PIXELS) fired during open,
        # before our header check could run (formats we do not pre-parse, e.g. TIFF). The
        # warning only arrives here as an exception when warnings are configured as errors.
        raise too_many_pixels_from_pillow(exc, max_pixels) from exc
    except Exception as exc:
        # Pillow signals bad data with a zoo of types (OSError, SyntaxError, ValueError,
        # EOFError, struct.error, IndexError, ...); for a user they all mean the same thing.
        raise corrupt(source_format, exc) from exc


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str
    width: int
    height: int


def inspect_image(data: bytes, *, max_pixels: int, max_jpeg_scans: int = 100) -> ImageHeader:
    """The door check for an uploaded image: its format and stored size from the header alone
    (no pixel is decoded), or :class:`ImageFailure` (not an image, too many pixels, a JPEG
    with too many scans, an unreadable header)."""
    source_format = _checked_format(data, max_pixels, max_jpeg_scans)
    try:
        # formats=[...] keeps the sniffed plugin, as the decoder does.
        with Image.open(io.BytesIO(data), formats=[source_format]) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_many_pixels_from_pillow(exc, max_pixels) from exc
    except Exception as exc:
        raise corrupt(source_format, exc) from exc
    check_pixels(width, height, max_pixels=max_pixels)
    return ImageHeader(source_format, width, height)


def _checked_format(data: bytes, max_pixels: int, max_jpeg_scans: int) -> str:
    """The format by magic bytes, the pixel budget where the header makes it cheap, and the
    JPEG scan cap (both before any pixel is decoded)."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    source_format = sniff_format(data[:SNIFF_BYTES])
    if source_format is None:
        raise ImageFailure(ImageErrorCode.NOT_AN_IMAGE, describe_non_image(data))
    # Some decoders allocate their canvas while *opening* (WebP's animation decoder does),
    # so where the header makes it cheap, enforce the budget before Pillow sees the bytes.
    declared = declared_size(source_format, data)
    if declared is not None:
        check_pixels(*declared, max_pixels=max_pixels)
    if source_format == "JPEG":
        check_jpeg_scans(data, max_jpeg_scans)
    return source_format


def encode_jpeg(
    image: Image.Image, *, quality: int, optimize: bool, icc_profile: bytes | None
) -> bytes:
    out = io.BytesIO()
    # Baseline, standard Huffman tables unless asked. Measured on coffee_4mp.jpg at q50:
    # optimised tables save 8 % (364 vs 396 KB) for 8 ms more encode (15 vs 7 ms), progressive
    # 2.5 % more for twice that again, and the encoder bounds the whole service's throughput.
    # (bench/README.md has the side-by-side numbers.)
    # Metadata is opt-in in Pillow's JPEG writer except the COM marker, which it copies from
    # ``image.info``; comment=b"" stops that (cameras and editors put serials there).
    with metrics.IMAGE_PHASE_SECONDS.labels("encode").time():
        image.save(
            out,
            format="JPEG",
            quality=quality,
            optimize=optimize,
            comment=b"",
            icc_profile=icc_profile,
        )
    return out.getvalue()
