"""Turn untrusted downloaded bytes into a small, clean, upright RGB JPEG.

Everything here treats its input as hostile: the bytes come from arbitrary URLs in a
user-supplied CSV. So the pipeline is ordered to be cheap before it is expensive:

1. classify the content by magic bytes (never by URL extension or Content-Type, which lie);
2. read the dimensions from the header and refuse images over the pixel budget *before* any
   pixel buffer exists (a 100 KB PNG can declare 30000x30000 and ask for 900 MB);
3. only then decode, orient, convert to RGB and re-encode.

Every way a bad file can fail is reported as an :class:`ImageFailure` so that one bad row
never takes down the batch. The function is pure (bytes in, bytes out) and keeps no mutable
module state, so it is safe to run from several threads at once (the worker uses
``asyncio.to_thread``); Pillow releases the GIL while decoding and encoding.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
from dataclasses import dataclass
from typing import Final, cast

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features

from models.errors import ImageErrorCode, ImageFailure

__all__ = ["SNIFF_BYTES", "CompressedImage", "compress_image", "sniff_format"]

#: How many leading bytes :func:`sniff_format` needs to recognise every supported format.
SNIFF_BYTES: Final = 32

# AVIF ships inside the Pillow wheels (>= 11.3) but is an optional build feature; accept it
# only where this interpreter can really decode it, so "AVIF" never means "fails later".
_AVIF_DECODABLE: Final = bool(features.check_module("avif"))

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Sizes of the BMP info headers Pillow's BMP plugin understands. Checking this as well as "BM"
# keeps two-letter text such as "BMW ..." from being taken for a bitmap.
_BMP_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})
# ICC device classes whose profiles describe how to display pixel values. Device-link and
# abstract profiles also say "RGB" but are transforms, not a description of the data.
_DISPLAY_ICC_CLASSES: Final = frozenset({"mntr", "scnr", "spac"})
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Modes whose samples are RGB values (a palette holds RGB entries), i.e. the pixels an
# embedded RGB profile was describing reach the output unchanged.
_RGB_SOURCE_MODES: Final = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"})
_WHITE: Final = (255, 255, 255)
_JPEG_MAX_SIDE: Final = 65500  # libjpeg's JPEG_MAX_DIMENSION


@dataclass(frozen=True, slots=True)
class CompressedImage:
    """The re-encoded image: JPEG bytes plus the displayed (post-rotation) dimensions."""

    data: bytes
    width: int
    height: int
    source_format: str


def sniff_format(head: bytes) -> str | None:
    """Name the image format of ``head`` from its magic bytes, or ``None`` if unsupported.

    ``head`` should be at least :data:`SNIFF_BYTES` long (the whole payload is fine). Returns
    Pillow's format name: ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"GIF"``, ``"TIFF"``, ``"BMP"``
    or ``"AVIF"``. File names and Content-Type headers are deliberately not an input.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    # Classic TIFF (42) and BigTIFF (43), both byte orders.
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and struct.unpack_from("<I", head, 14)[0] in _BMP_HEADER_SIZES
    ):
        return "BMP"
    if _AVIF_DECODABLE and "avif" in _ftyp_brands(head):
        return "AVIF"
    return None


def compress_image(
    data: bytes, *, quality: int, max_pixels: int, optimize: bool = False
) -> CompressedImage:
    """Decode ``data`` and re-encode it as a metadata-free RGB JPEG at ``quality``.

    The output is what a viewer would show: EXIF orientation applied, transparency
    flattened onto white, the first frame of an animation. Camera metadata (EXIF, GPS, XMP,
    comments) is dropped; an RGB ICC profile is kept so colours do not shift. ``optimize``
    computes Huffman tables for this image: about 8 % fewer bytes for 1.9x the CPU.

    Raises :class:`ImageFailure` with ``NOT_AN_IMAGE``, ``TOO_MANY_PIXELS`` or
    ``CORRUPT_IMAGE`` for bad input, and ``ValueError`` for out-of-range arguments (a caller
    bug, not a property of the image).
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")

    source_format = sniff_format(data[:SNIFF_BYTES])
    if source_format is None:
        raise ImageFailure(ImageErrorCode.NOT_AN_IMAGE, _describe_non_image(data))

    # Some decoders allocate their canvas while *opening* (WebP's animation decoder does),
    # so where the header makes it cheap, enforce the budget before Pillow sees the bytes.
    declared = _declared_size(source_format, data)
    if declared is not None:
        _check_pixels(*declared, max_pixels=max_pixels)

    try:
        image, icc_profile = _decode(data, source_format, max_pixels)
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
        raise _too_many_pixels_from_pillow(exc, max_pixels) from exc
    except Exception as exc:
        # Pillow signals bad data with a zoo of types (OSError, SyntaxError, ValueError,
        # EOFError, struct.error, IndexError, ...); for a user they all mean the same thing.
        raise _corrupt(source_format, exc) from exc

    try:
        return CompressedImage(
            data=_encode_jpeg(image, quality=quality, optimize=optimize, icc_profile=icc_profile),
            width=image.width,
            height=image.height,
            source_format=source_format,
        )
    finally:
        image.close()


def _decode(data: bytes, source_format: str, max_pixels: int) -> tuple[Image.Image, bytes | None]:
    """Open, budget-check, load, orient and convert; returns an RGB image and ICC to keep.

    The caller owns (and must close) the returned image. It may be the opened file itself:
    the common case is an RGB JPEG, and copying 48 MB of pixels just to leave a ``with``
    block would double peak memory for a 16 MP photo.
    """
    # ``formats=`` pins the plugin to what the magic bytes said, so a file cannot sniff as
    # PNG and then be handed to some rarely exercised decoder Pillow also happens to accept.
    # BytesIO over bytes shares the buffer rather than copying it.
    source = Image.open(io.BytesIO(data), formats=[source_format])
    try:
        # Image.open only parsed the header; nothing has been decoded yet. This is the
        # authoritative budget check (the pre-open one only covers some formats).
        _check_pixels(source.width, source.height, max_pixels=max_pixels)
        # Loads the first frame only; later frames of a GIF/WebP/TIFF are never decoded.
        # Truncated data raises here because ImageFile.LOAD_TRUNCATED_IMAGES stays False:
        # we never flip that process-wide switch, a half-grey product photo is worse than
        # an error the user can act on.
        source.load()
        icc_profile = source.info.get("icc_profile")
        source_mode = source.mode
        # Orientation is a display hint the output cannot carry (we strip EXIF), so bake it
        # into the pixels. A damaged EXIF block should not sink an otherwise good image:
        # if it cannot be read, the stored orientation is the best we can do.
        with contextlib.suppress(Exception):
            ImageOps.exif_transpose(source, in_place=True)
        rgb = _to_rgb(source, icc_profile)
    except BaseException:
        source.close()
        raise
    if rgb is not source:
        source.close()
    return rgb, _rgb_display_profile(icc_profile, source_mode)


def _to_rgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Return ``image`` itself if already plain RGB, else exactly one new RGB image.

    Intermediate images made on the way are closed as soon as they are used so that peak
    memory is at most two full-size buffers.
    """
    mode = image.mode
    has_transparency = mode in _ALPHA_MODES or "transparency" in image.info
    if has_transparency:
        return _flatten_on_white(image)
    if mode == "RGB":
        return image
    if mode == "CMYK":
        return _cmyk_to_rgb(image, icc_profile)
    if mode.startswith(("I", "F")):
        gray = _high_depth_to_l(image)
        try:
            return gray.convert("RGB")
        finally:
            gray.close()
    # L, 1, P, RGBX, YCbCr, LAB, HSV: Pillow's converters are exact for these.
    return image.convert("RGB")


def _flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite over white: JPEG has no alpha and product shots expect a white page."""
    if image.mode == "RGBA":
        rgba = image
    elif image.mode == "La":
        # No direct La -> RGBA converter; un-premultiplying via LA is the supported route.
        la = image.convert("LA")
        rgba = la.convert("RGBA")
        la.close()
    else:
        # Honours palette / tRNS transparency as well as real alpha channels.
        rgba = image.convert("RGBA")
    try:
        flat = Image.new("RGB", rgba.size, _WHITE)
        # Using the RGBA image as its own mask pastes through its alpha channel without
        # materialising a separate mask image.
        flat.paste(rgba, (0, 0), rgba)
        return flat
    finally:
        if rgba is not image:
            rgba.close()


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Use the embedded CMYK profile when there is one; print CMYK is not naive CMYK."""
    # Adobe's inverted CMYK JPEGs are already un-inverted by Pillow's decoder, so the naive
    # conversion keeps hues right; the profile additionally gets ink limits and dot gain
    # right, which is visibly better on print-workflow files.
    source_profile = _open_profile(icc_profile)
    if source_profile is not None and source_profile.profile.xcolor_space == "CMYK":
        # A profile lcms rejects for this image falls back to the naive conversion.
        with contextlib.suppress(ImageCms.PyCMSError, OSError, ValueError):
            converted = ImageCms.profileToProfile(
                image,
                source_profile,
                ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
            if converted is not None:
                return converted
    return image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float gray to 8 bits.

    Pillow's own ``convert("L")`` clamps instead of scaling, which turns every 16-bit
    grayscale PNG almost entirely white.
    """
    wide = image if image.mode in ("I", "F") else image.convert("I")
    try:
        # Single-band images report one (min, max) pair of numbers.
        low, high = cast("tuple[float, float]", wide.getextrema())
        if image.mode.startswith("I;16"):
            scale = 1 / 257
        elif wide.mode == "F" and low >= 0 and high <= 1.0:
            scale = 255.0  # normalised float data
        elif high > 255:
            scale = 255 / max(65535.0, high)
        else:
            scale = 1.0
        if wide.mode == "I":
            return wide.point(lambda value: value * scale, "L")
        scaled = wide.point(lambda value: value * scale)
        try:
            return scaled.convert("L")
        finally:
            scaled.close()
    finally:
        if wide is not image:
            wide.close()


def _open_profile(icc_profile: bytes | None) -> ImageCms.ImageCmsProfile | None:
    if not icc_profile:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return None


def _rgb_display_profile(icc_profile: bytes | None, source_mode: str) -> bytes | None:
    """The source's ICC profile if it still describes the output pixels, else ``None``.

    Dropping a Display P3 / Adobe RGB profile would shift colours, so such profiles travel
    with the pixels. A CMYK or gray profile attached to RGB data would make colour-managed
    viewers misread every pixel; so would an RGB profile that was wrongly embedded in a
    CMYK or gray file, since those pixels went through a different conversion. A profile
    lcms cannot parse is no better than none.
    """
    if source_mode not in _RGB_SOURCE_MODES:
        return None
    profile = _open_profile(icc_profile)
    if profile is None:
        return None
    if profile.profile.xcolor_space != "RGB " or profile.profile.device_class not in (
        _DISPLAY_ICC_CLASSES
    ):
        return None
    return icc_profile


def _encode_jpeg(
    image: Image.Image, *, quality: int, optimize: bool, icc_profile: bytes | None
) -> bytes:
    out = io.BytesIO()
    # Baseline, standard Huffman tables unless asked. Measured on coffee_4mp.jpg at q50:
    # optimised tables save 8 % (364 vs 396 KB) for 8 ms more encode (15 vs 7 ms), progressive
    # 2.5 % more for twice that again, and the encoder bounds the whole service's throughput.
    # (bench/README.md has the side-by-side numbers.)
    # Metadata is opt-in in Pillow's JPEG writer except the COM marker, which it copies from
    # ``image.info``; comment=b"" stops that (cameras and editors put serials there).
    image.save(
        out,
        format="JPEG",
        quality=quality,
        optimize=optimize,
        comment=b"",
        icc_profile=icc_profile,
    )
    return out.getvalue()


def _check_pixels(width: int, height: int, *, max_pixels: int) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise ImageFailure(
            ImageErrorCode.TOO_MANY_PIXELS,
            f"image is {width}x{height} ({pixels:,} pixels); the limit is {max_pixels:,} pixels",
        )
    # A 70000x10 strip is within any pixel budget but cannot be written as JPEG at all;
    # refuse it here, before decoding, rather than fail in the encoder after the work.
    if max(width, height) > _JPEG_MAX_SIDE:
        raise ImageFailure(
            ImageErrorCode.TOO_MANY_PIXELS,
            f"image is {width}x{height}; JPEG output is limited to {_JPEG_MAX_SIDE:,} pixels"
            " per side",
        )


def _too_many_pixels_from_pillow(exc: Exception, max_pixels: int) -> ImageFailure:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
    return ImageFailure(
        ImageErrorCode.TOO_MANY_PIXELS,
        f"image has {size}; the limit is {max_pixels:,} pixels",
    )


def _corrupt(source_format: str, exc: Exception) -> ImageFailure:
    if isinstance(exc, UnidentifiedImageError):
        # Pillow's text names our BytesIO object, which means nothing to a user.
        detail = "its header could not be parsed"
    else:
        detail = str(exc) or type(exc).__name__
    if "truncated" in detail.lower() or isinstance(exc, EOFError):
        message = f"{source_format} image is truncated: {detail}"
    else:
        message = f"{source_format} image is corrupt or truncated: {detail}"
    return ImageFailure(ImageErrorCode.CORRUPT_IMAGE, message)


def _declared_size(source_format: str, data: bytes) -> tuple[int, int] | None:
    """Canvas size from fixed-offset header fields, for formats where that is trivial."""
    if source_format == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        return width, height
    if source_format == "GIF" and len(data) >= 10:
        width, height = struct.unpack_from("<HH", data, 6)
        return width, height
    if source_format == "WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack_from("<HH", data, 26)
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and data[20] == 0x2F:
            bits = struct.unpack_from("<I", data, 21)[0]
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width, height
    return None


def _ftyp_brands(head: bytes) -> set[str]:
    """Major and compatible brands of an ISO-BMFF ``ftyp`` box (AVIF, HEIC, MP4...)."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return set()
    box_end = min(len(head), struct.unpack_from(">I", head, 0)[0])
    brands = {head[8:12].decode("latin-1")}
    # Offset 12 is the minor version; compatible brands follow in 4-byte steps.
    for offset in range(16, box_end - 3, 4):
        brands.add(head[offset : offset + 4].decode("latin-1"))
    return brands


def _describe_non_image(data: bytes) -> str:
    """A user-facing reason; the usual culprit is an error page served with status 200."""
    if not data:
        return "not an image: the content is empty"
    head = data[:1024]
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    unsupported = _unsupported_image_kind(head)
    if unsupported is not None:
        return f"unsupported image format: {unsupported}"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        kind = "HTML (probably an error or login page)"
    elif b"<svg" in text:
        kind = "SVG (vector images are not supported)"
    elif text.startswith(b"<?xml"):
        kind = "XML"
    elif text.startswith((b"{", b"[")):
        kind = "JSON"
    elif head.startswith(b"%PDF"):
        kind = "a PDF document"
    elif head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf")):
        kind = "an archive"
    elif _is_text(head):
        kind = "plain text"
    else:
        return "not an image: the content does not match any supported image format"
    return f"not an image: content looks like {kind}"


def _unsupported_image_kind(head: bytes) -> str | None:
    brands = _ftyp_brands(head)
    if brands & {"heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"}:
        return "HEIC/HEIF"
    if "avif" in brands:
        return "AVIF"  # only reached when this Pillow build cannot decode AVIF
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ICO"
    if head.startswith(b"8BPS"):
        return "Photoshop PSD"
    if head.startswith(b"\xff\x0a") or head[4:12] == b"JXL \r\n\x87\n":
        return "JPEG XL"
    return None


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the 1024-byte boundary.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(char.isprintable() or char in "\r\n\t" for char in decoded)
