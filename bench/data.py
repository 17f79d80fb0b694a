"""Benchmark inputs: corpus photos (and 6 and 12 MP photos made from them) copied into a work
directory, and CSVs generated at run time."""

from __future__ import annotations

import csv
import functools
import io
import shutil
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corpus"
HEADER = ("S. No.", "Product Name", "Input Image Urls")
IMAGES_PER_PRODUCT = 3
# The size spread of a real supplier sheet, 0.26 to 12 MP: a hero shot (4 MP, the corpus'
# "typical product photo"), a 1 MP detail shot, a thumbnail-sized photo, and two camera-sized
# photos (issue 23). Products take IMAGES_PER_PRODUCT of them in turn, so over a multiple of
# five products every photo is used equally often, as in the codec limits' loop.
DEFAULT_PHOTOS = (
    "coffee_4mp.jpg",
    "hubble_deep_field.jpg",
    "astronaut.jpg",
    "coffee_6mp.jpg",
    "hubble_12mp.jpg",
)
BIG_PHOTO = "astronaut_16mp.jpg"
# Made by the bench from corpus photos (none of the corpus' own is 6 or 12 MP): upscaled with
# LANCZOS, then a 2x2 mosaic of mirrored copies for the 12 MP one, so the JPEG holds real
# photographic detail rather than flat interpolation. Saved at quality 90, as a camera would.
GENERATED = {
    "coffee_6mp.jpg": ("coffee_4mp.jpg", (3000, 2000), 1),
    "hubble_12mp.jpg": ("hubble_deep_field.jpg", (1860, 1620), 2),
}


@functools.cache
def photo_bytes(name: str) -> bytes:
    """A photo of the mix: from the corpus, or generated (see GENERATED)."""
    if name not in GENERATED:
        return (CORPUS / name).read_bytes()
    source, size, tiles = GENERATED[name]
    with Image.open(CORPUS / source) as original:
        tile = original.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    mosaic = Image.new("RGB", (size[0] * tiles, size[1] * tiles))
    for row in range(tiles):
        for column in range(tiles):
            flipped = tile
            if column % 2:
                flipped = flipped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if row % 2:
                flipped = flipped.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
            mosaic.paste(flipped, (column * size[0], row * size[1]))
    out = io.BytesIO()
    mosaic.save(out, format="JPEG", quality=90)
    return out.getvalue()


def copy_photos(names: Sequence[str], root: Path) -> Path:
    """Write the photos the origin serves, so nothing outside the repository is read."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in GENERATED:
            (root / name).write_bytes(photo_bytes(name))
        else:
            shutil.copyfile(CORPUS / name, root / name)
    return root


def load_photos(names: Sequence[str]) -> list[bytes]:
    return [photo_bytes(name) for name in names]


def product_photos(photos: Sequence[str], serial: int) -> list[str]:
    """The photos of product ``serial`` (from 1): all of them if there are at most
    IMAGES_PER_PRODUCT, else IMAGES_PER_PRODUCT in turn through the mix."""
    if len(photos) <= IMAGES_PER_PRODUCT:
        return list(photos)
    first = (serial - 1) * IMAGES_PER_PRODUCT
    return [photos[(first + index) % len(photos)] for index in range(IMAGES_PER_PRODUCT)]


def images_per_product(photos: Sequence[str]) -> int:
    return min(len(photos), IMAGES_PER_PRODUCT)


def batch_csv(
    base_url: str, products: int, photos: Sequence[str], tag: str, *, unique: bool = True
) -> bytes:
    """``products`` rows of up to three images each (:func:`product_photos`); every URL is
    distinct (query string).

    ``unique`` (the default): ``/unique/`` URLs, for which the origin appends the path to the
    bytes, so each image has a sha256 of its own and is really rendered. Otherwise ``/img/``
    URLs serve the same bytes for every copy of a photo, which the service renders once and
    then reuses: what that measures is reuse, not the pipeline (reported side by side).
    """
    route = "unique" if unique else "img"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for serial in range(1, products + 1):
        urls = ",".join(
            f"{base_url}/{route}/{name}?r={tag}&p={serial}&i={index}"
            for index, name in enumerate(product_photos(photos, serial))
        )
        writer.writerow([serial, f"{tag} product {serial}", urls])
    return buffer.getvalue().encode()
