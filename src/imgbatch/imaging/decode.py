"""Decoding: open with the sniffed plugin, check the pixel budget, load, orient, convert to RGB."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from typing import Final, cast

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.imaging.limits import DeadlineReader
from imgbatch.imaging.metadata import ExifInfo, read_exif

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
class Decoded:
    """One decoded source, every variant's starting point: upright RGB pixels and what the
    file said about itself. The caller owns ``image`` and must close it (:meth:`close`)."""

    image: Image.Image
    #: The ICC profile to write with every output (None: the pixels are plain sRGB).
    icc_profile: bytes | None
    source_format: str
    exif: ExifInfo | None
    #: What was done to the pixels on the way: decode, orient, flatten_alpha, ...
    operations: tuple[str, ...]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def close(self) -> None:
        self.image.close()


def decode(data: bytes, source_format: str, max_pixels: int, seconds: float) -> Decoded:
    """Open, budget-check, load, orient and convert to RGB.

    ``seconds`` of this thread's CPU may go into reading and decoding the file (see
    :class:`imaging.limits.DeadlineReader`).

    The caller owns (and must close) the returned image. It may be the opened file itself:
    the common case is an RGB JPEG, and copying 48 MB of pixels just to leave a ``with``
    block would double peak memory for a 16 MP photo.
    """
    # ``formats=`` pins the plugin to what the magic bytes said, so a file cannot sniff as
    # PNG and then be handed to some rarely exercised decoder Pillow also happens to accept.
    # BytesIO over bytes shares the buffer rather than copying it.
    source = Image.open(DeadlineReader(data, seconds), formats=[source_format])
    try:
        # Image.open only parsed the header; nothing has been decoded yet. This is the
        # authoritative budget check (the pre-open one only covers some formats).
        check_pixels(source.width, source.height, max_pixels=max_pixels)
        # Loads the first frame only; later frames of a GIF/WebP/TIFF are never decoded.
        # Truncated data raises here because ImageFile.LOAD_TRUNCATED_IMAGES stays False:
        # we never flip that process-wide switch, a half-grey product photo is worse than
        # an error the user can act on.
        source.load()
        # Before exif_transpose, which removes the Orientation tag it applies.
        exif = read_exif(source)
        icc_profile = source.info.get("icc_profile")
        source_mode = source.mode
        operations = ["decode"]
        if exif is not None and exif.orientation not in (None, 1):
            operations.append("orient")
        operations.extend(_conversion(source))
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
    return Decoded(
        image=rgb,
        icc_profile=_rgb_display_profile(icc_profile, source_mode),
        source_format=source_format,
        exif=exif,
        operations=tuple(operations),
    )


def _conversion(image: Image.Image) -> list[str]:
    """The name of what :func:`_to_rgb` will do to this image, for the record."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return ["flatten_alpha"]
    if image.mode == "RGB":
        return []
    return ["cmyk_to_rgb" if image.mode == "CMYK" else f"to_rgb:{image.mode}"]


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


def check_pixels(width: int, height: int, *, max_pixels: int) -> None:
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


def too_many_pixels_from_pillow(exc: Exception, max_pixels: int) -> ImageFailure:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
    return ImageFailure(
        ImageErrorCode.TOO_MANY_PIXELS,
        f"image has {size}; the limit is {max_pixels:,} pixels",
    )


def corrupt(source_format: str, exc: Exception) -> ImageFailure:
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
