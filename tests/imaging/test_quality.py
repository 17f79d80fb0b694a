"""Catalogue-quality measures on the summary image, and the warnings a profile's thresholds give."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from imgbatch.imaging.metadata import summary_image
from imgbatch.imaging.quality import Checks, Measures, assess, measure

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"
REAL_PHOTOS = ("astronaut.jpg", "camera_gray.jpg", "chelsea.jpg", "coffee_4mp.jpg", "rocket.jpg")


def product_shot(size: tuple[int, int], background: str | tuple[int, int, int]) -> Image.Image:
    """A textured "product" filling the middle 60 % of a plain background."""
    width, height = size
    image = Image.new("RGB", size, background)
    inner = (width * 3 // 5, height * 3 // 5)
    corner = ((width - inner[0]) // 2, (height - inner[1]) // 2)
    image.paste(Image.effect_noise(inner, 100).convert("RGB"), corner)
    return image


def measured(image: Image.Image) -> Measures:
    return measure(summary_image(image))


def codes(checks: Checks, image: Image.Image) -> list[str]:
    return [w.code for w in assess(checks, *image.size, measured(image))]


@pytest.mark.parametrize("name", REAL_PHOTOS)
def test_real_photos_are_sharp_and_not_on_white_and_blurring_them_is_seen(name: str) -> None:
    with Image.open(CORPUS / name) as opened:
        photo = opened.convert("RGB")
    sharp = measured(photo)
    assert sharp.sharpness > Checks().min_sharpness * 5  # type: ignore[operator]
    assert sharp.white_border < 0.5
    blurred = measured(photo.filter(ImageFilter.GaussianBlur(max(photo.size) * 0.03)))
    assert blurred.sharpness < Checks().min_sharpness  # type: ignore[operator]


def test_each_warning_and_its_threshold() -> None:
    marketplace = Checks(min_white_border=0.9)
    on_white = product_shot((1000, 1000), "white")
    assert codes(marketplace, on_white) == []
    assert codes(marketplace, product_shot((1000, 1000), (200, 30, 30))) == ["not_white_background"]
    assert codes(Checks(), product_shot((1000, 1000), (200, 30, 30))) == []  # an opt-in
    blurred = on_white.filter(ImageFilter.GaussianBlur(40))
    assert codes(marketplace, blurred) == ["blurry"]
    assert codes(marketplace, product_shot((120, 90), "white")) == ["too_small"]
    assert codes(marketplace, product_shot((3000, 600), "white")) == ["extreme_aspect"]
    # A threshold set to null turns its check off; another value moves it.
    assert codes(Checks(min_long_edge=None), product_shot((120, 90), "white")) == []
    assert codes(Checks(min_long_edge=100), product_shot((120, 90), "white")) == []
    assert codes(Checks(max_aspect=6), product_shot((3000, 600), "white")) == []


def test_messages_say_what_was_found_and_what_was_expected() -> None:
    found = assess(Checks(min_white_border=0.95), 500, 100, Measures(12.5, 0.4))
    assert [(w.code, w.message) for w in found] == [
        ("too_small", "the long edge is 500 px, under 800 px"),
        ("extreme_aspect", "500x100 is 5.0:1, over 3:1"),
        ("blurry", "sharpness 12.5 is under 100 (Laplacian variance of a 64 px copy)"),
        ("not_white_background", "40% of the border is near white, under 95%"),
    ]
    # Outputs made before the measures existed: only the size checks.
    assert [w.code for w in assess(Checks(), 500, 100, None)] == ["too_small", "extreme_aspect"]
