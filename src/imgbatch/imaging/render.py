"""Rendering: one decoded image in, every variant of a profile out.

Measured choices (docs/profiles-and-outputs.md, "Profiles", has the numbers):

- **One decode, then a chain.** Sizes are made largest to smallest, each from the one before, so
  a 150 px thumbnail of a 12 MP photo resamples a 600 px image, not 12 MP of pixels.
- **Integer reduction first, then Lanczos-3 for the rest** (``imaging.resample``, with its
  numbers): ``reduce(k)`` in Pillow, libvips for the non-integer rest of the scale. 2400 ->
  1200 px is one ``reduce(2)``, 6-8 ms for all three storefront sizes of a 4 MP photo instead
  of 60-80 ms. ``draft()`` cannot help here: the full-size primary needs the full decode, and
  a second, DCT-scaled decode costs more than reducing the first.
- **WebP at quality 75, method 0.** Pillow's default method 4 costs 4x the CPU for ~15 % fewer
  bytes. **AVIF at speed 10, one thread**: speed 8 triples the CPU for 5 % fewer bytes, and a
  worker already runs one image per core.
- **No second full-size encode.** A variant whose box the source does not reach is, when the
  profile makes a full-size output on purpose (``original``), that output in its format: for a
  storefront source of at most 1200 px ``large`` (and ``medium`` at most 600 px) is the
  ``original`` JPEG, and a WebP at full size, the costliest encode of the profile (~20 ms per
  megapixel), is never made. Variants of the same format, quality and size are one object.
- **Transparency is flattened on white for every format**, as for the JPEG primary: one RGB
  chain serves all variants, and every size of a product shot looks the same on a page.
- **Metadata stays out.** No writer is given EXIF or XMP; the ICC profile is passed explicitly
  because the WebP writer drops it and the AVIF and PNG writers would copy one from the
  image's info (which may be the source's, e.g. a CMYK profile).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from PIL import Image

from imgbatch.core import metrics
from imgbatch.imaging.compress import encode_jpeg
from imgbatch.imaging.decode import Decoded
from imgbatch.imaging.metadata import dominant_color, fit_within, placeholder, summary_image
from imgbatch.imaging.profiles import OutputFormat, Variant
from imgbatch.imaging.quality import Measures, measure
from imgbatch.imaging.resample import downscale

WEBP_METHOD: Final = 0
AVIF_SPEED: Final = 10


@dataclass(frozen=True, slots=True)
class Encoded:
    data: bytes
    format: OutputFormat
    width: int
    height: int


@dataclass(frozen=True)
class Rendition:
    """Every variant of one image, plus what describes it."""

    #: By variant name, in the profile's order. Variants of the same pixel size hold the same
    #: :class:`Encoded` object (the first one's, whatever their formats); ``owner`` says which
    #: variant's name it is stored under.
    outputs: dict[str, Encoded]
    owner: dict[str, str]
    dominant_color: str
    placeholder: str
    operations: tuple[str, ...]
    measures: Measures


def target_size(size: tuple[int, int], variant: Variant) -> tuple[int, int]:
    return size if variant.max_edge is None else fit_within(size, variant.max_edge)


def encode(
    image: Image.Image,
    output: OutputFormat,
    *,
    quality: int,
    icc_profile: bytes | None,
    jpeg_optimize: bool = False,
) -> bytes:
    if output == OutputFormat.JPEG:
        return encode_jpeg(image, quality=quality, optimize=jpeg_optimize, icc_profile=icc_profile)
    out = io.BytesIO()
    icc = icc_profile or b""
    # encode_jpeg times itself (compress_image uses it too); the other formats are timed here.
    with metrics.IMAGE_PHASE_SECONDS.labels("encode").time():
        if output == OutputFormat.WEBP:
            image.save(out, format="WEBP", quality=quality, method=WEBP_METHOD, icc_profile=icc)
        elif output == OutputFormat.AVIF:
            image.save(
                out,
                format="AVIF",
                quality=quality,
                speed=AVIF_SPEED,
                max_threads=1,
                icc_profile=icc,
            )
        else:
            image.save(out, format="PNG", icc_profile=icc)
    return out.getvalue()


def render(decoded: Decoded, variant: Variant, *, jpeg_optimize: bool = False) -> Encoded:
    """One variant straight from the decoded image (:func:`render_profile` chains several)."""
    image = downscale(decoded.image, target_size(decoded.size, variant))
    try:
        return _encode_variant(image, variant, decoded, jpeg_optimize)
    finally:
        if image is not decoded.image:
            image.close()


def _encode_variant(
    image: Image.Image, variant: Variant, decoded: Decoded, jpeg_optimize: bool
) -> Encoded:
    data = encode(
        image,
        variant.format,
        quality=variant.quality,
        icc_profile=decoded.icc_profile,
        jpeg_optimize=jpeg_optimize,
    )
    return Encoded(data, variant.format, image.width, image.height)


_OutputKey = tuple[OutputFormat, int, tuple[int, int]]


def _output_key(variant: Variant, size: tuple[int, int]) -> _OutputKey:
    # PNG is lossless: its quality setting changes nothing.
    quality = 0 if variant.format == OutputFormat.PNG else variant.quality
    return variant.format, quality, size


def _made_by(
    full: tuple[int, int], variants: Sequence[Variant], sizes: dict[str, tuple[int, int]]
) -> dict[str, Variant]:
    """The variant whose encode each variant is.

    Itself, except for a variant whose box the source does not reach: it would be a second
    full-size encode of the source, the costliest of the profile, so when the profile already
    makes a full-size output on purpose (a variant without a box, such as ``original``), it is
    that output, in that output's format. Variants of one box in several formats (an AVIF and a
    WebP for ``<picture>``) stay in their own formats wherever they shrink the source.
    """
    unboxed = next((v for v in variants if v.max_edge is None), None)
    return {
        v.name: unboxed
        if unboxed is not None and v.max_edge is not None and sizes[v.name] == full
        else v
        for v in variants
    }


def render_profile(
    decoded: Decoded, variants: Sequence[Variant], *, jpeg_optimize: bool = False
) -> Rendition:
    """Every variant, sizes made largest to smallest, each distinct output encoded once."""
    sizes = {variant.name: target_size(decoded.size, variant) for variant in variants}
    made_by = _made_by(decoded.size, variants, sizes)
    ordered = sorted(set(sizes.values()), key=lambda s: s[0] * s[1], reverse=True)
    operations = list(decoded.operations)
    encoded: dict[_OutputKey, tuple[str, Encoded]] = {}
    current = decoded.image
    for size in ordered:
        at_size = [v for v in variants if sizes[v.name] == size]
        previous, current = current, downscale(current, size)
        if previous is not current and previous is not decoded.image:
            previous.close()  # each step only needs the one before it
        if current is not decoded.image:
            operations.append(f"resize:{at_size[0].name}")
        for variant in at_size:
            maker = made_by[variant.name]
            key = _output_key(maker, size)
            if key in encoded:
                continue
            encoded[key] = (maker.name, _encode_variant(current, maker, decoded, jpeg_optimize))
            operations.append(f"encode:{maker.name}:{maker.format.value}")
    if current is not decoded.image:
        current.close()
    small = summary_image(decoded.image)
    try:
        colour, hash_, measures = dominant_color(small), placeholder(small), measure(small)
    finally:
        small.close()
    outputs: dict[str, Encoded] = {}
    owner_of: dict[str, str] = {}
    for variant in variants:
        key = _output_key(made_by[variant.name], sizes[variant.name])
        owner_of[variant.name], outputs[variant.name] = encoded[key]
    return Rendition(
        outputs=outputs,
        owner=owner_of,
        dominant_color=colour,
        placeholder=hash_,
        operations=tuple(operations),
        measures=measures,
    )
