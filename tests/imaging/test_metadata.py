"""EXIF read before it is stripped, the dominant colour and the placeholder."""

from __future__ import annotations

import io
from pathlib import Path

from blurhash_rs import blurhash_decode
from PIL import Image

from imgbatch.imaging import open_image
from imgbatch.imaging.metadata import (
    ExifInfo,
    dominant_color,
    placeholder,
    read_exif,
    summary_image,
)

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"


def test_exif_of_a_photo_that_carries_it_is_read_before_orientation_is_applied() -> None:
    decoded = open_image((CORPUS / "chelsea_exif_rotated.jpg").read_bytes(), max_pixels=10**8)
    try:
        assert decoded.exif == ExifInfo(
            make="ExampleCam",
            model="Model X",
            orientation=6,
            has_gps=True,
            latitude=52.3670833,
            longitude=4.8838889,
        )
        assert decoded.size == (300, 451)  # and the pixels were turned upright
    finally:
        decoded.close()


def test_rich_and_hostile_exif() -> None:
    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    exif[0x010F] = "Canon\x00\x00"  # Make, NUL-padded
    exif[0x0110] = "Canon EOS R5"
    exif[0x0131] = "Lightroom 7.1\x00junk"  # Software with junk after the NUL
    exif[0x0112] = 42  # an Orientation that does not exist
    ifd = exif.get_ifd(0x8769)
    ifd[0xA434] = "RF24-70mm F2.8"  # LensModel
    ifd[0x9003] = "2024:05:17 14:03:22"  # DateTimeOriginal
    ifd[0x9011] = "+02:00"  # OffsetTimeOriginal
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    with Image.open(io.BytesIO(out.getvalue())) as opened:
        info = read_exif(opened)
    assert info == ExifInfo(
        make="Canon",
        model="Canon EOS R5",
        lens="RF24-70mm F2.8",
        software="Lightroom 7.1",
        taken_at="2024-05-17T14:03:22+02:00",
    )


def test_no_exif_is_none() -> None:
    with Image.open(CORPUS / "logo_alpha.png") as png:
        assert read_exif(png) is None


def test_dominant_colour_and_placeholder_describe_the_picture() -> None:
    red = Image.new("RGB", (800, 600), (200, 20, 20))
    red.paste((250, 250, 250), (0, 0, 200, 600))  # a quarter white
    small = summary_image(red)
    assert max(small.size) == 64
    assert dominant_color(small) == "#c81414"
    hash_ = placeholder(small)
    preview = blurhash_decode(hash_, 8, 6)
    pixel = preview.convert("RGB").getpixel((6, 3))
    assert isinstance(pixel, tuple) and pixel[0] > 150 and pixel[1] < 80
