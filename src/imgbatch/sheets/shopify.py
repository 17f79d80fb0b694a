"""Shopify's product CSV: one product per ``Handle``, spread over several rows.

Shopify's export (help.shopify.com, "Using CSV files to import and export products") writes a
product's first row with every product column, then one row per further variant or image that
carries only the ``Handle`` and the variant or image columns. ``Image Src`` holds one image URL
per row, ``Image Position`` its place in the product's gallery, ``Variant Image`` the image of
that row's variant (usually one of the product's ``Image Src`` URLs).

A product here is the rows of one handle, which must be consecutive (as Shopify writes them).
Its images are the ``Image Src`` URLs in ``Image Position`` order (rows without a position after
those with one, in row order), then the ``Variant Image`` URLs not among them; a URL repeated in
the product is one image. The cells of every row are kept exactly as read (not stripped), so the
file can be written back with only the URL cells changed (``domain.results``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from imgbatch.sheets.rows import url_problem
from imgbatch.sheets.types import RowError, SheetLimits, SheetRow, show, utf8_length

HANDLE: Final = "Handle"
TITLE: Final = "Title"
IMAGE_SRC: Final = "Image Src"
IMAGE_POSITION: Final = "Image Position"
VARIANT_IMAGE: Final = "Variant Image"
#: The columns a header must have to be read as Shopify's layout.
REQUIRED: Final = (HANDLE, IMAGE_SRC)
#: The columns whose cells are image URLs, replaced by the outputs in the Shopify result file.
URL_COLUMNS: Final = (IMAGE_SRC, VARIANT_IMAGE)
# One product's rows, cells as read, are stored with it (a MongoDB document is at most 16 MB).
MAX_PRODUCT_BYTES: Final = 1 << 20


def is_shopify_header(columns: list[str]) -> bool:
    return all(name in columns for name in REQUIRED)


@dataclass(frozen=True, slots=True)
class ShopifyLayout:
    header: list[str]  # the header cells exactly as read
    handle: int
    title: int | None
    image_src: int
    image_position: int | None
    variant_image: int | None

    @classmethod
    def of(cls, columns: list[str], raw: list[str]) -> ShopifyLayout:
        def find(name: str) -> int | None:
            return columns.index(name) if name in columns else None

        return cls(
            header=raw,
            handle=columns.index(HANDLE),
            title=find(TITLE),
            image_src=columns.index(IMAGE_SRC),
            image_position=find(IMAGE_POSITION),
            variant_image=find(VARIANT_IMAGE),
        )


_Record = tuple[int, list[str] | None, str]


@dataclass
class _Product:
    handle: str
    line: int
    title: str
    rows: list[list[str]]
    # (position or None, row order, url) of each Image Src, and the Variant Image URLs in order.
    sources: list[tuple[int | None, int, str]]
    variant_images: list[str]
    size: int
    bad: bool = False


def shopify_products(
    records: Iterator[_Record],
    layout: ShopifyLayout,
    limits: SheetLimits,
    report: Callable[[RowError], None],
) -> Iterator[SheetRow]:
    """Group consecutive rows by handle into products; report each problem with its line and
    Shopify column; yield the valid products numbered 1..n."""
    width = len(layout.header)
    seen: dict[str, int] = {}
    current: _Product | None = None
    position = 0
    for line, cells, problem in records:
        if cells is None:
            report(RowError(line, "", problem))
            if current is not None:
                current.bad = True
            continue

        def cell(index: int | None, row: list[str] = cells) -> str:
            return row[index].strip() if index is not None and index < len(row) else ""

        handle = cell(layout.handle)
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            report(RowError(line, "", f"row has {len(cells)} cells but the header has {width}"))
            if current is not None and current.handle == handle:
                current.bad = True
            continue
        if not handle:
            report(RowError(line, HANDLE, "the handle is empty"))
            continue
        if current is None or current.handle != handle:
            if current is not None:
                row = _finish(current, position, limits, report)
                if row is not None:
                    position += 1
                    yield row
            if handle in seen:
                report(
                    RowError(
                        line,
                        HANDLE,
                        f"the rows of handle {show(handle)} must be consecutive (it first "
                        f"appears on line {seen[handle]})",
                    )
                )
                current = None
                continue
            seen[handle] = line
            current = _Product(handle, line, cell(layout.title) or handle, [], [], [], 0)
        current.rows.append(cells)
        current.size += sum(utf8_length(c) for c in cells) + 8
        src = cell(layout.image_src)
        if src:
            valid = _check(line, IMAGE_SRC, src, limits, report)
            order = _position(line, cell(layout.image_position), report)
            if valid and order is not False:
                current.sources.append((order, len(current.rows), src))
            else:
                current.bad = True
        variant = cell(layout.variant_image)
        if variant:
            if _check(line, VARIANT_IMAGE, variant, limits, report):
                current.variant_images.append(variant)
            else:
                current.bad = True
    if current is not None:
        row = _finish(current, position, limits, report)
        if row is not None:
            yield row


def _check(
    line: int, column: str, url: str, limits: SheetLimits, report: Callable[[RowError], None]
) -> bool:
    reason = url_problem(url, limits)
    if reason is not None:
        report(RowError(line, column, f"the URL {reason}"))
    return reason is None


def _position(line: int, value: str, report: Callable[[RowError], None]) -> int | bool | None:
    """The image's position, None if it has none, False (reported) if it is not a number."""
    if not value:
        return None
    if value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    report(RowError(line, IMAGE_POSITION, f"must be a whole number, got {show(value)}"))
    return False


def _finish(
    product: _Product, position: int, limits: SheetLimits, report: Callable[[RowError], None]
) -> SheetRow | None:
    ordered = sorted(product.sources, key=lambda s: (s[0] is None, s[0] or 0, s[1]))
    urls = list(dict.fromkeys([url for _, _, url in ordered] + product.variant_images))
    if len(urls) > limits.max_urls_per_row:
        report(
            RowError(
                product.line,
                IMAGE_SRC,
                f"handle {show(product.handle)} has {len(urls)} different images "
                f"(max {limits.max_urls_per_row})",
            )
        )
        return None
    if product.size > MAX_PRODUCT_BYTES:
        report(
            RowError(
                product.line,
                "",
                f"the rows of handle {show(product.handle)} hold {product.size} bytes; "
                f"the limit is {MAX_PRODUCT_BYTES} per product",
            )
        )
        return None
    if product.bad:
        return None
    return SheetRow(
        line=product.line,
        position=position,
        serial_number=position + 1,
        product_name=product.title,
        image_urls=urls,
        extra={HANDLE: product.handle},
        extra_bytes=product.size,
        source_rows=product.rows,
    )
