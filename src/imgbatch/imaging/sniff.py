"""What the bytes are: the format by magic bytes, the canvas size from the header, and why not."""

from __future__ import annotations

import struct
from typing import Final

from PIL import features

#: How many leading bytes :func:`sniff_format` needs to recognise every supported format.
SNIFF_BYTES: Final = 32

# AVIF ships inside the Pillow wheels (>= 11.3) but is an optional build feature; accept it
# only where this interpreter can really decode it, so "AVIF" never means "fails later".
_AVIF_DECODABLE: Final = bool(features.check_module("avif"))

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Sizes of the BMP info headers Pillow's BMP plugin understands. Checking this as well as "BM"
# keeps two-letter text such as "BMW ..." from being taken for a bitmap.
_BMP_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})


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


def declared_size(source_format: str, data: bytes) -> tuple[int, int] | None:
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


def describe_non_image(data: bytes) -> str:
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
