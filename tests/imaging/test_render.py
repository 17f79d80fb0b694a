"""Rendering a profile from one decode: sizes, formats, sharing, metadata and the old bytes."""

from __future__ import annotations

import functools
import hashlib
import io
import time
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageOps

from imgbatch.core.errors import ImageFailure
from imgbatch.imaging import (
    OutputFormat,
    Profile,
    Variant,
    compress_image,
    open_image,
    render,
    render_profile,
)
from imgbatch.imaging.metadata import fit_within
from imgbatch.imaging.profiles import default_profile, storefront_profile
from imgbatch.imaging.render import Rendition
from imgbatch.imaging.resample import downscale
from imgbatch.models.media import StoredVariant
from imgbatch.worker.images import _render_sync

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"
MAX_PIXELS = 50_000_000
STOREFRONT = storefront_profile(50)


@functools.cache
def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rendered(name: str, profile: Profile = STOREFRONT) -> Rendition:
    decoded = open_image(corpus(name), max_pixels=MAX_PIXELS)
    try:
        return render_profile(decoded, profile.variants)
    finally:
        decoded.close()


def every_format() -> Profile:
    # Sizes differ: variants of one pixel size would be one object, in the first one's format.
    return Profile(
        "all",
        (
            Variant("full", OutputFormat.JPEG, 70),
            Variant("w", OutputFormat.WEBP, 75, 200),
            Variant("a", OutputFormat.AVIF, 55, 190),
            Variant("p", OutputFormat.PNG, 100, 180),
        ),
    )


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in CORPUS.iterdir()
        if p.suffix in (".jpg", ".png", ".gif", ".webp")
        and p.name not in ("bomb_900mp.png", "not_an_image.jpg", "truncated.jpg")
    ),
)
def test_default_primary_is_byte_for_byte_the_compressed_jpeg(name: str) -> None:
    data = corpus(name)
    decoded = open_image(data, max_pixels=MAX_PIXELS)
    try:
        primary = render(decoded, default_profile(50).primary)
        rendition = render_profile(decoded, default_profile(50).variants)
    finally:
        decoded.close()
    expected = compress_image(data, quality=50, max_pixels=MAX_PIXELS).data
    assert primary.data == expected
    assert rendition.outputs["original"].data == expected
    assert (primary.width, primary.height) == opened(expected).size


@pytest.mark.parametrize("name", ["coffee.jpg", "rocket.jpg", "chelsea_exif_rotated.jpg"])
def test_default_primary_is_what_the_original_service_wrote(name: str) -> None:
    # The recipe the service has always used, spelled out with Pillow alone.
    with Image.open(io.BytesIO(corpus(name))) as source:
        source.load()
        icc = source.info.get("icc_profile")
        ImageOps.exif_transpose(source, in_place=True)
        out = io.BytesIO()
        source.convert("RGB").save(
            out, format="JPEG", quality=50, optimize=False, comment=b"", icc_profile=icc
        )
    decoded = open_image(corpus(name), max_pixels=MAX_PIXELS)
    try:
        assert render(decoded, default_profile(50).primary).data == out.getvalue()
    finally:
        decoded.close()


def test_storefront_sizes_and_formats_decode_as_promised() -> None:
    decoded = open_image(corpus("coffee_4mp.jpg"), max_pixels=MAX_PIXELS)
    try:
        rendition = render_profile(decoded, STOREFRONT.variants)
    finally:
        decoded.close()
    expected = {
        "original": ("JPEG", (2400, 1600)),
        "thumbnail": ("WEBP", (150, 100)),
        "medium": ("WEBP", (600, 400)),
        "large": ("WEBP", (1200, 800)),
    }
    assert list(rendition.outputs) == list(expected)
    for name, (fmt, size) in expected.items():
        encoded = rendition.outputs[name]
        image = opened(encoded.data)
        assert (image.format, image.size, image.mode) == (fmt, size, "RGB"), name
        assert (encoded.width, encoded.height) == size
        assert rendition.owner[name] == name
    # Largest to smallest: every size comes from the one before it.
    resizes = [op for op in rendition.operations if op.startswith("resize:")]
    assert resizes == ["resize:large", "resize:medium", "resize:thumbnail"]
    assert rendition.dominant_color.startswith("#") and len(rendition.dominant_color) == 7
    assert 20 <= len(rendition.placeholder) <= 40


def test_small_sources_are_never_upscaled_and_equal_variants_share_one_object() -> None:
    rendition = rendered("astronaut.jpg")  # 512x512
    original = rendition.outputs["original"]
    medium, large = rendition.outputs["medium"], rendition.outputs["large"]
    assert (large.width, large.height) == (medium.width, medium.height) == (512, 512)
    # Both are the full-size original: one object, whatever their formats were to be.
    assert large is medium is original
    assert rendition.owner["large"] == rendition.owner["medium"] == "original"
    assert [op for op in rendition.operations if op.startswith("encode:")] == [
        "encode:original:jpeg",
        "encode:thumbnail:webp",
    ]
    assert opened(rendition.outputs["thumbnail"].data).size == (150, 150)


def _stored_storefront(name: str) -> dict[str, StoredVariant]:
    """What the worker records and lists for a storefront render of corpus photo ``name``."""
    data = corpus(name)
    _, rendered = _render_sync(
        data,
        STOREFRONT,
        "o/owner/sha/digest",
        hashlib.sha256(data).hexdigest(),
        max_pixels=MAX_PIXELS,
        max_jpeg_scans=100,
        decode_seconds=30.0,
        jpeg_optimize=False,
        report_gps=False,
    )
    return rendered.variants


def test_a_variant_the_size_of_the_original_is_the_original_in_every_listing() -> None:
    # hubble_deep_field.jpg is 1000x872: `large` (1200) would be a full-size WebP.
    rendition = rendered("hubble_deep_field.jpg")
    assert rendition.owner["large"] == "original"
    assert opened(rendition.outputs["large"].data).format == "JPEG"
    large, original = (
        opened(rendition.outputs["large"].data),
        opened(rendition.outputs["original"].data),
    )
    assert large.size == original.size == (1000, 872)
    assert large.tobytes() == original.tobytes()
    # Only one full-size encode was made; medium is still its own WebP.
    encodes = [op for op in rendition.operations if op.startswith("encode:")]
    assert encodes == ["encode:original:jpeg", "encode:medium:webp", "encode:thumbnail:webp"]
    assert opened(rendition.outputs["medium"].data).format == "WEBP"

    stored = _stored_storefront("hubble_deep_field.jpg")
    original_entry = stored["original"]
    assert original_entry.key.endswith("/original.jpg")
    assert stored["large"] == original_entry  # key, format, width, height, bytes
    assert (stored["large"].format, stored["large"].width, stored["large"].height) == (
        "jpeg",
        1000,
        872,
    )
    assert stored["medium"].key.endswith("/medium.webp")
    assert stored["medium"].format == "webp"


def test_a_source_larger_than_large_still_gets_its_own_webp_large() -> None:
    stored = _stored_storefront("coffee_4mp.jpg")  # 2400x1600
    large = stored["large"]
    assert large.key.endswith("/large.webp")
    assert (large.format, large.width, large.height) == ("webp", 1200, 800)
    assert large.key != stored["original"].key


def _picture(*full: Variant) -> Profile:
    # An operator profile with an AVIF and a WebP of the same box, for <picture>.
    return Profile(
        "picture",
        (
            *full,
            Variant("tile", OutputFormat.AVIF, 55, 200),
            Variant("tile_webp", OutputFormat.WEBP, 75, 200),
        ),
    )


def test_formats_of_one_box_stay_their_own_where_the_box_shrinks_the_source() -> None:
    rendition = rendered("coffee.jpg", _picture())  # 600x400: both tiles are 200x133
    assert rendition.owner == {"tile": "tile", "tile_webp": "tile_webp"}
    assert opened(rendition.outputs["tile"].data).format == "AVIF"
    assert opened(rendition.outputs["tile_webp"].data).format == "WEBP"


def test_an_unreached_box_is_the_full_size_output_only_if_the_profile_makes_one() -> None:
    tiny = Profile("tiny", (Variant("tile", OutputFormat.WEBP, 75, 2000),))
    alone = rendered("coffee.jpg", tiny)
    assert opened(alone.outputs["tile"].data).format == "WEBP"  # nothing else to be
    both = rendered(
        "coffee.jpg",
        Profile(
            "both",
            (
                Variant("original", OutputFormat.JPEG, 80),
                Variant("original_webp", OutputFormat.WEBP, 75),  # full size on purpose
                Variant("tile", OutputFormat.AVIF, 55, 2000),
            ),
        ),
    )
    assert both.owner == {
        "original": "original",
        "original_webp": "original_webp",
        "tile": "original",
    }
    assert opened(both.outputs["original_webp"].data).format == "WEBP"
    assert opened(both.outputs["tile"].data).format == "JPEG"


def test_portrait_photos_keep_their_aspect_and_come_out_upright() -> None:
    decoded = open_image(corpus("chelsea_exif_rotated.jpg"), max_pixels=MAX_PIXELS)
    try:
        rendition = render_profile(decoded, STOREFRONT.variants)
    finally:
        decoded.close()
    assert opened(rendition.outputs["original"].data).size == (300, 451)
    assert opened(rendition.outputs["thumbnail"].data).size == (100, 150)
    assert rendition.operations[:2] == ("decode", "orient")


def test_every_format_is_clean_flattened_and_keeps_an_rgb_icc_profile() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(io.BytesIO(corpus("chelsea_exif_rotated.jpg"))) as source:
        source.load()
        exif = source.getexif()
        del exif[0x0112]  # keep the camera and GPS tags, not the rotation
        rgba = source.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 40, 40))  # a transparent corner
    out = io.BytesIO()
    rgba.save(out, format="PNG", icc_profile=icc, exif=exif)
    data = out.getvalue()
    assert b"ExampleCam" in data

    decoded = open_image(data, max_pixels=MAX_PIXELS)
    try:
        rendition = render_profile(decoded, every_format().variants)
    finally:
        decoded.close()
    assert "flatten_alpha" in rendition.operations
    for name, fmt in (("full", "JPEG"), ("w", "WEBP"), ("a", "AVIF"), ("p", "PNG")):
        encoded = rendition.outputs[name]
        image = opened(encoded.data)
        assert image.format == fmt
        assert image.mode == "RGB"
        assert image.info.get("icc_profile") == icc, name
        assert not image.getexif(), name
        assert b"ExampleCam" not in encoded.data
        corner = image.getpixel((1, 1))
        assert isinstance(corner, tuple) and min(corner) > 235, (name, corner)


def test_a_source_whose_profile_is_dropped_gets_no_profile_in_any_format() -> None:
    with Image.open(io.BytesIO(corpus("chelsea_cmyk.jpg"))) as cmyk:
        assert cmyk.mode == "CMYK"
        out = io.BytesIO()
        lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
        cmyk.save(out, format="JPEG", quality=92, icc_profile=lab)
    decoded = open_image(out.getvalue(), max_pixels=MAX_PIXELS)
    try:
        rendition = render_profile(decoded, every_format().variants)
    finally:
        decoded.close()
    for encoded in rendition.outputs.values():
        assert "icc_profile" not in opened(encoded.data).info


def test_a_thumbnail_of_a_big_photo_does_not_cost_a_full_resolution_resample() -> None:
    decoded = open_image(corpus("astronaut_16mp.jpg"), max_pixels=MAX_PIXELS)
    try:
        size = fit_within(decoded.size, 150)

        def cpu(step: object) -> float:
            # The process's CPU: libvips resamples on a thread of its own (imaging.resample).
            started = time.process_time()
            for _ in range(3):
                result = step()  # type: ignore[operator]
                result.close()
            return time.process_time() - started

        reduced = cpu(lambda: downscale(decoded.image, size))
        full = cpu(lambda: decoded.image.resize(size, Image.Resampling.LANCZOS))
    finally:
        decoded.close()
    # Measured about 1/6; a full-resolution LANCZOS pass would be 1.
    assert reduced < full / 2


def test_bad_input_fails_before_any_variant() -> None:
    with pytest.raises(ImageFailure) as caught:
        open_image(corpus("not_an_image.jpg"), max_pixels=MAX_PIXELS)
    assert caught.value.code == "not_an_image"


def test_fit_within_keeps_aspect_and_never_upscales() -> None:
    assert fit_within((2400, 1600), 150) == (150, 100)
    assert fit_within((1600, 2400), 150) == (100, 150)
    assert fit_within((100, 80), 150) == (100, 80)
    assert fit_within((10000, 1), 150) == (150, 1)
