"""The products of a status page (``GET /api/status/{id}``), and the stored pages of a completed
request.

A completed request's products do not change until a retry completes it again, so the
``request_finished`` task (domain.results) writes every product's JSON once, one per line, in
files of :data:`PAGE_ROWS` products under the result files' generation. A status page of a
completed request is then the live summary spliced with lines of those files: no product is
read from the database or validated again, whatever the offset and limit. Until the files are
there (or on an API node with other URL settings: another generation) the page is rendered
from the products, to the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from pydantic.main import IncEx

from imgbatch.core.settings import Settings
from imgbatch.domain.images import ImageView, image_views
from imgbatch.domain.urls import output_urls
from imgbatch.models.products import ProductRecord
from imgbatch.models.requests import RequestRecord
from imgbatch.storage import MediaStore, StorageUnavailable

# Products per stored file: the largest page the API serves (limit=1000), so a page needs at
# most two files, each ~1 MB.
PAGE_ROWS = 1000
# Coordinates are left out of every exif object unless IMGBATCH_REPORT_GPS is on.
_NO_GPS: IncEx = {"images": {"__all__": {"exif": {"latitude", "longitude"}}}}


class ImageErrorView(BaseModel):
    url: str
    code: str
    message: str


class ProductView(BaseModel):
    serial_number: int
    product_name: str
    status: str
    input_image_urls: list[str]
    output_image_urls: list[str | None]
    errors: list[ImageErrorView]
    # Per input image, aligned with input_image_urls: every variant, source, EXIF, colour, ...
    images: list[ImageView] = []


class ProductsView(BaseModel):
    """A page's products alone: rendered apart from the page's head, and spliced into it."""

    products: list[ProductView]


def product_view(settings: Settings, product: ProductRecord) -> ProductView:
    return ProductView(
        serial_number=product.serial_number,
        product_name=product.product_name,
        status=product.status,
        input_image_urls=product.input_image_urls,
        output_image_urls=(
            output_urls(settings, product.output_keys)
            if product.status.is_final
            else [None] * len(product.input_image_urls)
        ),
        errors=[ImageErrorView(url=e.url, code=e.code, message=e.message) for e in product.errors],
        images=image_views(settings, product),
    )


def no_gps(settings: Settings) -> IncEx | None:
    """What a product's JSON leaves out (pydantic's ``exclude``), for :func:`product_json` and
    the status page that holds the products."""
    return None if settings.report_gps else _NO_GPS


def product_json(settings: Settings, product: ProductRecord) -> str:
    """One product of a status page, exactly as the page's ``products`` array holds it."""
    return product_view(settings, product).model_dump_json(exclude=no_gps(settings))


def page_key(folder: str, index: int) -> str:
    """The stored file of products ``index * PAGE_ROWS`` onwards, in a generation's folder."""
    return f"{folder}status/{index}.jsonl"


async def stored_products(
    store: MediaStore, folder: str, record: RequestRecord, offset: int, limit: int
) -> bytes | None:
    """The ``products`` array of a page, as JSON, from the files in ``folder``; None if one of
    the files it needs is not there (not written yet, or another generation's)."""
    if offset >= record.products_total:
        return None  # past the end: the live path's empty range read is as cheap
    last = min(offset + limit, record.products_total) - 1
    lines: list[bytes] = []
    for index in range(offset // PAGE_ROWS, last // PAGE_ROWS + 1):
        try:
            data = await store.get(page_key(folder, index))
        except StorageUnavailable:
            # The products are in the database too: a page is rendered live, not refused.
            return None
        if data is None:
            return None
        lines.extend(_slice(data.split(b"\n"), index * PAGE_ROWS, offset, last))
    return b"[" + b",".join(lines) + b"]"


def _slice(lines: Sequence[bytes], first: int, offset: int, last: int) -> Sequence[bytes]:
    """The lines of a file starting at product ``first`` that fall in ``offset..last``."""
    return lines[max(0, offset - first) : last - first + 1]
