"""Benchmark inputs: corpus photos copied into a work directory and CSVs generated at run time."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Sequence
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corpus"
HEADER = ("S. No.", "Product Name", "Input Image Urls")
# One product = a hero shot (4 MP, the corpus' "typical product photo"), a 1 MP detail shot and
# a small thumbnail-sized photo: the size spread of a real supplier sheet.
DEFAULT_PHOTOS = ("coffee_4mp.jpg", "hubble_deep_field.jpg", "astronaut.jpg")
BIG_PHOTO = "astronaut_16mp.jpg"


def copy_photos(names: Sequence[str], root: Path) -> Path:
    """Copy the photos the origin serves, so nothing outside the repository is read."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(CORPUS / name, root / name)
    return root


def load_photos(names: Sequence[str]) -> list[bytes]:
    return [(CORPUS / name).read_bytes() for name in names]


def batch_csv(base_url: str, products: int, photos: Sequence[str], tag: str) -> bytes:
    """``products`` rows of ``len(photos)`` images each; every URL is distinct (query string).

    ``/unique/`` URLs: the origin appends the path to the bytes, so each image has a sha256 of
    its own and is really rendered. The same bytes would be rendered once and then reused,
    which measures reuse (see ``reimport.py``), not the pipeline.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for serial in range(1, products + 1):
        urls = ",".join(
            f"{base_url}/unique/{name}?r={tag}&p={serial}&i={index}"
            for index, name in enumerate(photos)
        )
        writer.writerow([serial, f"{tag} product {serial}", urls])
    return buffer.getvalue().encode()
