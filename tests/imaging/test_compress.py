"""Behaviour of the image pipeline on the real corpus and on hostile bytes."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageCms, ImageFile, ImageStat, features

from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.imaging import (
    SNIFF_BYTES,
    CompressedImage,
    compress_image,
    sniff_format,
)

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"
REPO_ROOT = Path(__file__).parents[2]
MAX_PIXELS = 50_000_000
PHOTOS = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg", "hubble_deep_field.jpg"]


@functools.cache
def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def compress(
    data: bytes, *, quality: int = 80, max_pixels: int = MAX_PIXELS, optimize: bool = False
) -> CompressedImage:
    return compress_image(data, quality=quality, max_pixels=max_pixels, optimize=optimize)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_output(result: CompressedImage) -> Image.Image:
    """Decode the output and check the invariants every successful result must have."""
    image = decode(result.data)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (result.width, result.height)
    return image


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Average per-channel absolute difference, 0..255."""
    assert a.size == b.size
    channels = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean
    return sum(channels) / len(channels)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def failure_of(data: bytes, **kwargs: int) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        compress(data, **kwargs)
    return caught.value


def chelsea() -> Image.Image:
    return decode(corpus("chelsea.jpg"))


# --- real photographs -------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_gets_smaller_and_keeps_its_size_and_look(name: str) -> None:
    data = corpus(name)
    source = decode(data)

    result = compress(data)

    output = decode_output(result)
    assert result.source_format == "JPEG"
    assert output.size == source.size
    assert len(result.data) < len(data)
    assert len(result.data) < len(encode(source.convert("RGB"), "JPEG", quality=95))
    assert mean_abs_diff(output, source) < 4


def test_quality_is_honoured() -> None:
    data = corpus("coffee.jpg")

    low = compress(data, quality=20)
    high = compress(data, quality=80)

    assert len(low.data) < len(high.data)
    source = decode(data)
    assert mean_abs_diff(decode_output(low), source) > mean_abs_diff(decode_output(high), source)


def test_output_is_baseline_jpeg() -> None:
    data = compress(corpus("chelsea.jpg")).data
    output = Image.open(io.BytesIO(data))

    assert not output.info.get("progressive")
    assert b"\xff\xc0" in data  # SOF0: baseline DCT


@pytest.mark.parametrize("name", ["coffee_4mp.jpg", "logo_alpha.png", "chelsea_cmyk.jpg"])
def test_optimize_makes_smaller_files_with_exactly_the_same_pixels(name: str) -> None:
    plain = compress(corpus(name), quality=50)
    optimized = compress(corpus(name), quality=50, optimize=True)

    # Huffman tables only change the entropy coding: the decoded pixels are identical.
    assert decode_output(optimized).tobytes() == decode_output(plain).tobytes()
    assert len(optimized.data) < 0.97 * len(plain.data)


def test_progressive_source_is_compressed_like_any_jpeg() -> None:
    result = compress(corpus("chelsea_progressive.jpg"))

    output = decode_output(result)
    assert output.size == chelsea().size
    assert len(result.data) < len(corpus("chelsea_progressive.jpg"))
    assert mean_abs_diff(output, chelsea()) < 4


def test_webp_source_is_decoded_and_compressed() -> None:
    result = compress(corpus("chelsea.webp"))

    output = decode_output(result)
    assert result.source_format == "WEBP"
    assert output.size == chelsea().size
    assert mean_abs_diff(output, chelsea()) < 5


def test_grayscale_becomes_neutral_rgb() -> None:
    source = decode(corpus("camera_gray.jpg"))
    assert source.mode == "L"

    output = decode_output(compress(corpus("camera_gray.jpg")))

    assert output.size == source.size
    red, green, blue = output.split()
    assert mean_abs_diff(red, green) < 1
    assert mean_abs_diff(green, blue) < 1
    assert mean_abs_diff(output, source) < 4


def test_cmyk_colours_are_not_inverted() -> None:
    assert decode(corpus("chelsea_cmyk.jpg")).mode == "CMYK"

    output = decode_output(compress(corpus("chelsea_cmyk.jpg")))

    reference = ImageStat.Stat(chelsea()).mean
    for got, expected in zip(ImageStat.Stat(output).mean, reference, strict=True):
        assert abs(got - expected) < 6
    assert mean_abs_diff(output, chelsea()) < 6


# --- orientation and metadata -----------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    # The fixture stores chelsea.jpg's pixels unchanged and adds Orientation=6 ("rotate
    # 90 degrees clockwise to display"), so the upright picture is chelsea turned clockwise:
    # 300x451, and turning it back counter-clockwise must give chelsea.jpg.
    result = compress(corpus("chelsea_exif_rotated.jpg"))

    output = decode_output(result)
    width, height = chelsea().size
    assert (result.width, result.height) == (height, width)
    assert mean_abs_diff(output.transpose(Image.Transpose.ROTATE_90), chelsea()) < 4


def test_camera_and_gps_metadata_do_not_leak() -> None:
    source = decode(corpus("chelsea_exif_rotated.jpg"))
    assert source.getexif().get_ifd(0x8825)  # the fixture really has GPS data

    result = compress(corpus("chelsea_exif_rotated.jpg"))

    output = decode_output(result)
    assert "exif" not in output.info
    assert not output.getexif()
    assert b"Exif\x00\x00" not in result.data
    assert b"ExampleCam" not in result.data
    assert b"Model X" not in result.data


def test_jpeg_comment_does_not_leak() -> None:
    assert decode(corpus("rocket.jpg")).info.get("comment")

    output = decode_output(compress(corpus("rocket.jpg")))

    assert "comment" not in output.info


def test_xmp_and_text_chunks_do_not_leak() -> None:
    source = decode(corpus("chelsea.jpg"))
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><secret>home address</secret></x:xmpmeta>'
    data = encode(source, "JPEG", quality=92, xmp=xmp, comment=b"serial 1234")

    result = compress(data)

    assert b"home address" not in result.data
    assert b"serial 1234" not in result.data


# --- colour profiles --------------------------------------------------------------------


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_rgb_icc_profile_is_kept() -> None:
    icc = srgb_icc()
    data = encode(chelsea(), "JPEG", quality=92, icc_profile=icc)

    output = decode_output(compress(data))

    assert output.info.get("icc_profile") == icc


def test_non_rgb_icc_profile_is_never_attached_to_rgb_output() -> None:
    lab_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    data = encode(chelsea(), "JPEG", quality=92, icc_profile=lab_icc)

    output = decode_output(compress(data))

    assert "icc_profile" not in output.info


def test_unparseable_icc_profile_is_dropped_not_fatal() -> None:
    data = encode(chelsea(), "JPEG", quality=92, icc_profile=b"definitely not an ICC profile")

    output = decode_output(compress(data))

    assert "icc_profile" not in output.info
    assert mean_abs_diff(output, chelsea()) < 4


def test_cmyk_with_mismatched_profile_still_converts_correctly() -> None:
    cmyk = decode(corpus("chelsea_cmyk.jpg"))
    data = encode(cmyk, "JPEG", quality=92, icc_profile=srgb_icc())

    output = decode_output(compress(data))

    assert "icc_profile" not in output.info
    assert mean_abs_diff(output, chelsea()) < 6


# --- transparency -----------------------------------------------------------------------


def test_logo_alpha_is_flattened_with_its_colours_intact() -> None:
    source = decode(corpus("logo_alpha.png"))
    assert source.mode == "RGBA"

    result = compress(corpus("logo_alpha.png"))

    output = decode_output(result)
    assert result.source_format == "PNG"
    assert output.size == source.size
    assert mean_abs_diff(output, source.convert("RGB")) < 4


def test_transparent_area_becomes_white() -> None:
    # logo_alpha.png turns out to be fully opaque, so punch a transparent hole into it
    # over the orange centre, where any other background colour would show.
    source = decode(corpus("logo_alpha.png"))
    hole = (200, 200, 300, 300)
    assert all(channel < 200 for channel in source.getpixel((250, 250))[1:3])  # type: ignore[index]
    alpha = source.getchannel("A")
    alpha.paste(0, hole)
    source.putalpha(alpha)

    output = decode_output(compress(encode(source, "PNG")))

    assert all(channel >= 250 for channel in output.getpixel((250, 250)))  # type: ignore[union-attr]
    assert output.getpixel((10, 10)) == pytest.approx(source.getpixel((10, 10))[:3], abs=4)  # type: ignore[index]


def half_transparent(mode: str) -> Image.Image:
    """Left half opaque dark red, right half fully transparent, in the given mode."""
    rgba = Image.new("RGBA", (64, 32), (120, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (32, 0, 64, 32))
    if mode == "LA":
        return rgba.convert("LA")
    if mode == "P":
        return rgba.convert("P")  # keeps transparency as a palette entry
    return rgba


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P", "GIF"), ("RGBA", "WEBP")]
)
def test_every_kind_of_transparency_is_flattened_on_white(mode: str, fmt: str) -> None:
    image = half_transparent(mode)
    params: dict[str, object] = {}
    if fmt == "WEBP":
        params["lossless"] = True
    elif fmt == "GIF":
        params["transparency"] = image.getpixel((56, 16))  # the GIF writer needs the index
    data = encode(image, fmt, **params)

    output = decode_output(compress(data))

    assert all(channel >= 250 for channel in output.getpixel((56, 16)))  # type: ignore[union-attr]
    assert max(output.getpixel((8, 16))) < 140  # type: ignore[arg-type]


def test_rgb_png_with_trns_colour_key_is_flattened_on_white() -> None:
    image = Image.new("RGB", (64, 32), (0, 0, 0))
    image.paste((120, 0, 0), (0, 0, 32, 32))
    data = encode(image, "PNG", transparency=(0, 0, 0))

    output = decode_output(compress(data))

    assert all(channel >= 250 for channel in output.getpixel((56, 16)))  # type: ignore[union-attr]


# --- other formats, animation, bit depth ------------------------------------------------


def test_animated_gif_gives_its_first_frame() -> None:
    source = Image.open(io.BytesIO(corpus("animated.gif")))
    frames = []
    for index in range(source.n_frames):  # type: ignore[attr-defined]
        source.seek(index)
        frames.append(source.convert("RGB"))

    result = compress(corpus("animated.gif"))

    output = decode_output(result)
    assert result.source_format == "GIF"
    assert output.size == source.size == (14, 25)
    distances = [mean_abs_diff(output, frame) for frame in frames]
    assert distances[0] == min(distances)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_with_distinct_frames_gives_the_first(fmt: str) -> None:
    red = Image.new("RGB", (40, 30), (200, 0, 0))
    blue = Image.new("RGB", (40, 30), (0, 0, 200))
    data = encode(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0)

    output = decode_output(compress(data))

    red_out, _, blue_out = ImageStat.Stat(output).mean
    assert red_out > 150
    assert blue_out < 50


def sample_photo(mode: str = "RGB") -> Image.Image:
    return chelsea().convert(mode)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("BMP", {}),
        ("PNG", {}),
        pytest.param(
            "AVIF",
            {"quality": 90},
            marks=pytest.mark.skipif(
                not features.check_module("avif"), reason="Pillow built without AVIF"
            ),
        ),
    ],
)
def test_other_supported_formats_compress(fmt: str, params: dict[str, object]) -> None:
    data = encode(sample_photo(), fmt, **params)

    result = compress(data)

    assert result.source_format == fmt
    output = decode_output(result)
    assert output.size == chelsea().size
    assert mean_abs_diff(output, chelsea()) < 6


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    gradient = Image.linear_gradient("L")  # 256x256, black at the top to white at the bottom
    wide = gradient.convert("I").point(lambda value: value * 257).convert("I;16")
    assert wide.getextrema() == (0, 65535)
    data = encode(wide, "PNG")
    assert decode(data).mode.startswith("I")

    output = decode_output(compress(data))

    assert mean_abs_diff(output, gradient) < 3


# --- refusals ---------------------------------------------------------------------------


def test_truncated_jpeg_is_reported_as_corrupt() -> None:
    failure = failure_of(corpus("truncated.jpg"))

    assert failure.code == ImageErrorCode.CORRUPT_IMAGE
    assert "truncated" in failure.message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_reported_as_corrupt() -> None:
    data = corpus("logo_alpha.png")

    failure = failure_of(data[: len(data) // 2])

    assert failure.code == ImageErrorCode.CORRUPT_IMAGE
    assert "truncated" in failure.message or "corrupt" in failure.message


def damaged_png(kind: str) -> bytes:
    data = bytearray(corpus("logo_alpha.png"))
    idat = data.index(b"IDAT")
    if kind == "short IHDR":  # Pillow raises ValueError
        data[8:12] = (5).to_bytes(4, "big")
    elif kind == "garbled chunk":  # Pillow raises UnidentifiedImageError from open()
        data[idat : idat + 4] = b"\x92MZ\xb7"
    else:  # "bad deflate": Pillow raises OSError from load()
        data[idat + 44] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("kind", ["short IHDR", "garbled chunk", "bad deflate"])
def test_damaged_png_is_reported_as_corrupt(kind: str) -> None:
    failure = failure_of(damaged_png(kind))

    assert failure.code == ImageErrorCode.CORRUPT_IMAGE
    assert failure.message.startswith("PNG image is")
    assert "BytesIO" not in failure.message  # no Python internals in user-facing text


def test_html_error_page_is_not_an_image() -> None:
    failure = failure_of(corpus("not_an_image.jpg"))

    assert failure.code == ImageErrorCode.NOT_AN_IMAGE
    assert "HTML" in failure.message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b'{"error": "not found"}', "JSON"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"%PDF-1.7\n", "PDF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (bytes(range(256)), "does not match"),
    ],
)
def test_non_images_are_described(data: bytes, expected: str) -> None:
    failure = failure_of(data)

    assert failure.code == ImageErrorCode.NOT_AN_IMAGE
    assert expected in failure.message


def test_pixel_bomb_is_refused() -> None:
    failure = failure_of(corpus("bomb_900mp.png"))

    assert failure.code == ImageErrorCode.TOO_MANY_PIXELS
    assert "30000x30000" in failure.message


def test_pixel_cap_does_not_depend_on_pillows_global_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    assert failure_of(corpus("bomb_900mp.png")).code == ImageErrorCode.TOO_MANY_PIXELS


def test_huge_jpeg_header_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A JPEG whose frame header claims 30000x30000 over a 451x300 body: nothing but the
    # post-open header check stands between it and a 2.7 GB allocation.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    data = bytearray(corpus("chelsea.jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    assert Image.open(io.BytesIO(bytes(data))).size == (30000, 30000)

    failure = failure_of(bytes(data))

    assert failure.code == ImageErrorCode.TOO_MANY_PIXELS
    assert "30000x30000" in failure.message


def test_pixel_cap_boundary() -> None:
    data = encode(Image.new("RGB", (10, 10), (10, 20, 30)), "PNG")

    assert compress(data, max_pixels=100).width == 10
    assert failure_of(data, max_pixels=99).code == ImageErrorCode.TOO_MANY_PIXELS


def test_image_too_wide_for_jpeg_is_refused_before_decoding() -> None:
    data = encode(Image.new("1", (65501, 1)), "PNG")

    failure = failure_of(data)

    assert failure.code == ImageErrorCode.TOO_MANY_PIXELS
    assert "65501x1" in failure.message


def test_pillow_bomb_error_maps_to_too_many_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    # For formats without a pre-open header check, Pillow's own backstop may fire first.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (100, 100)), "TIFF")

    failure = failure_of(data)

    assert failure.code == ImageErrorCode.TOO_MANY_PIXELS
    assert "10,000 pixels" in failure.message


def run_and_report_peak_rss_growth_mb(code: str) -> float:
    """Run ``code`` in a fresh interpreter; it must print the RSS growth it caused in MB."""
    script = textwrap.dedent(
        """
        import resource, sys
        from pathlib import Path
        from PIL import Image
        from imgbatch.core.errors import ImageFailure
        from imgbatch.imaging import compress_image
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        """
    ) + textwrap.dedent(code)
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(completed.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units are platform specific")
def test_pixel_bomb_never_allocates_its_pixels() -> None:
    # The bomb would need 900 MB once decoded; Pillow's own guard is switched off so that
    # only our check can save us.
    growth = run_and_report_peak_rss_growth_mb(
        f"""
        Image.MAX_IMAGE_PIXELS = None
        data = Path({str(CORPUS / "bomb_900mp.png")!r}).read_bytes()
        before = peak()
        try:
            compress_image(data, quality=80, max_pixels={MAX_PIXELS})
        except ImageFailure:
            pass
        print(peak() - before)
        """
    )
    assert growth < 20


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units are platform specific")
def test_sixteen_megapixel_photo_stays_within_a_memory_budget() -> None:
    # Decoded, the 4000x4000 photo is 48 MB of RGB. Decode + libjpeg's whole-image
    # coefficient buffers for optimised/progressive encoding need ~110 MB; a needless
    # extra full-size copy would push this well past the budget.
    growth = run_and_report_peak_rss_growth_mb(
        f"""
        data = Path({str(CORPUS / "astronaut_16mp.jpg")!r}).read_bytes()
        small = Path({str(CORPUS / "chelsea.jpg")!r}).read_bytes()
        compress_image(small, quality=80, max_pixels={MAX_PIXELS})  # warm up libraries
        before = peak()
        result = compress_image(data, quality=80, max_pixels={MAX_PIXELS})
        assert (result.width, result.height) == (4000, 4000)
        print(peak() - before)
        """
    )
    assert growth < 150


# --- arguments, concurrency, process state ---------------------------------------------


@pytest.mark.parametrize("quality", [0, 101])
def test_out_of_range_quality_is_a_caller_error(quality: int) -> None:
    with pytest.raises(ValueError, match="quality"):
        compress(corpus("chelsea.jpg"), quality=quality)


def test_non_positive_pixel_cap_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        compress(corpus("chelsea.jpg"), max_pixels=0)


def test_concurrent_calls_give_the_same_bytes_as_sequential_ones() -> None:
    names = [*PHOTOS, "chelsea.webp", "logo_alpha.png", "chelsea_cmyk.jpg", "animated.gif"] * 3
    sequential = [compress(corpus(name)).data for name in names]

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda name: compress(corpus(name)).data, names))

    assert concurrent == sequential


# --- sniffing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("astronaut.jpg", "JPEG"),
        ("camera_gray.jpg", "JPEG"),
        ("chelsea_cmyk.jpg", "JPEG"),
        ("chelsea_progressive.jpg", "JPEG"),
        ("chelsea_exif_rotated.jpg", "JPEG"),
        ("truncated.jpg", "JPEG"),  # the magic is fine; decoding is what fails
        ("logo_alpha.png", "PNG"),
        ("bomb_900mp.png", "PNG"),
        ("chelsea.webp", "WEBP"),
        ("animated.gif", "GIF"),
        ("not_an_image.jpg", None),
    ],
)
def test_sniff_corpus(name: str, expected: str | None) -> None:
    assert sniff_format(corpus(name)[:SNIFF_BYTES]) == expected


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("TIFF", {}),
        ("TIFF", {"big_tiff": True}),
        ("TIFF", {"tiffinfo": {}, "compression": "raw"}),
        ("BMP", {}),
        ("GIF", {}),
        pytest.param(
            "AVIF",
            {},
            marks=pytest.mark.skipif(
                not features.check_module("avif"), reason="Pillow built without AVIF"
            ),
        ),
    ],
)
def test_sniff_generated_formats(fmt: str, params: dict[str, object]) -> None:
    data = encode(Image.new("RGB", (8, 8), (1, 2, 3)), fmt, **params)

    assert sniff_format(data[:SNIFF_BYTES]) == fmt


def test_sniff_big_endian_tiff() -> None:
    assert sniff_format(b"MM\x00*\x00\x00\x00\x08" + bytes(24)) == "TIFF"


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"<!DOCTYPE html><html><head><title>404</title>",
        b"\xef\xbb\xbf  <html>",
        b"BMW 320d, blue, 2019 -- not a bitmap at all",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        b"\x00\x00\x00\x0cjP  \r\n\x87\n",
        b"GIF8",
        b"\xff\xd8",
        bytes(32),
    ],
)
def test_sniff_rejects_non_images(head: bytes) -> None:
    assert sniff_format(head) is None


@given(st.binary(max_size=64))
def test_sniff_never_raises(head: bytes) -> None:
    assert sniff_format(head) in {None, "JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF"}


# --- hostile bytes ----------------------------------------------------------------------

MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    b"RIFF\x00\x01\x00\x00WEBPVP8L",
    b"II*\x00",
    b"MM\x00*",
    b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
]
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(data: bytes) -> CompressedImage | ImageFailure:
    try:
        return compress(data, max_pixels=4_000_000)
    except ImageFailure as failure:
        return failure


def compresses_or_fails_cleanly(data: bytes) -> None:
    """Anything else escaping (OSError, SyntaxError, struct.error...) fails the test."""
    result = outcome(data)
    if isinstance(result, ImageFailure):
        assert result.code in {
            ImageErrorCode.NOT_AN_IMAGE,
            ImageErrorCode.TOO_MANY_PIXELS,
            ImageErrorCode.CORRUPT_IMAGE,
        }
        assert result.message
    else:
        decode_output(result)


@HYPOTHESIS
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_image_failure(data: bytes) -> None:
    compresses_or_fails_cleanly(data)


@HYPOTHESIS
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_junk_behind_valid_magic_only_ever_raises_image_failure(magic: bytes, junk: bytes) -> None:
    compresses_or_fails_cleanly(magic + junk)


@HYPOTHESIS
@given(
    st.sampled_from(["chelsea.jpg", "chelsea_progressive.jpg", "camera_gray.jpg"]),
    st.floats(min_value=0, max_value=1),
)
def test_any_prefix_of_a_real_jpeg_only_ever_raises_image_failure(
    name: str, fraction: float
) -> None:
    data = corpus(name)
    compresses_or_fails_cleanly(data[: int(len(data) * fraction)])


@HYPOTHESIS
@given(
    st.sampled_from(
        [
            "chelsea.jpg",
            "chelsea.webp",
            "animated.gif",
            "chelsea_cmyk.jpg",
            "chelsea_exif_rotated.jpg",
        ]
    ),
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=1), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
def test_corrupted_real_files_only_ever_raise_image_failure(
    name: str, edits: list[tuple[float, int]]
) -> None:
    data = bytearray(corpus(name))
    for position, value in edits:
        data[min(int(position * len(data)), len(data) - 1)] = value
    compresses_or_fails_cleanly(bytes(data))
