"""Caps on decoding work: the scans of a JPEG, counted before decoding, and a CPU deadline that
stops a decoder between the chunks it reads."""

from __future__ import annotations

import io
import struct
import time

import pytest
from PIL import Image

from imgbatch.core.errors import ImageErrorCode, ImageFailure
from imgbatch.imaging import compress_image
from imgbatch.imaging.limits import count_jpeg_scans
from tests.imaging.test_compress import PHOTOS, corpus
from tests.support.images import many_scan_jpeg, progressive_jpeg

MAX_PIXELS = 50_000_000


@pytest.mark.parametrize("name", [*PHOTOS, "camera_gray.jpg", "chelsea_cmyk.jpg"])
def test_baseline_files_have_one_scan(name: str) -> None:
    assert count_jpeg_scans(corpus(name), limit=100) == 1


def test_progressive_files_have_their_real_scan_count() -> None:
    assert count_jpeg_scans(corpus("chelsea_progressive.jpg"), limit=100) == 10
    assert count_jpeg_scans(progressive_jpeg(64), limit=100) == 10


def test_scans_of_an_embedded_thumbnail_are_not_counted() -> None:
    # Cameras put a whole JPEG (here a progressive one) in an APP1 segment.
    thumbnail = progressive_jpeg(64)
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 8) + b"Exif\0\0" + thumbnail
    photo = corpus("chelsea.jpg")
    assert count_jpeg_scans(photo[:2] + app1 + photo[2:], limit=100) == 1


def test_counting_stops_past_the_limit() -> None:
    assert count_jpeg_scans(many_scan_jpeg(5000, side=64), limit=100) == 101


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    bomb = many_scan_jpeg(3000, side=4000)  # ~4 s of decoding
    started = time.process_time()
    with pytest.raises(ImageFailure) as caught:
        compress_image(bomb, quality=50, max_pixels=MAX_PIXELS, max_jpeg_scans=100)
    assert time.process_time() - started < 1.0
    assert caught.value.code is ImageErrorCode.DECODE_TIMEOUT
    assert caught.value.message == (
        "JPEG has more than 100 scans; decoding it would take too long (the limit is 100 scans)"
    )


def test_a_jpeg_at_the_scan_limit_is_decoded() -> None:
    data = many_scan_jpeg(90, side=64)  # 10 real scans + 90
    result = compress_image(data, quality=50, max_pixels=MAX_PIXELS, max_jpeg_scans=100)
    assert Image.open(io.BytesIO(result.data)).size == (64, 64)


def test_a_decode_past_its_cpu_budget_fails_with_decode_timeout() -> None:
    # A 16 MP decode takes ~0.1 s of CPU: 1 ms stops it at the next chunk it reads.
    with pytest.raises(ImageFailure) as caught:
        compress_image(
            corpus("astronaut_16mp.jpg"), quality=50, max_pixels=MAX_PIXELS, decode_seconds=0.001
        )
    assert caught.value.code is ImageErrorCode.DECODE_TIMEOUT
    assert "0.001 s of CPU" in caught.value.message
