"""A request's result files: the result CSV, its failed rows and the JSON Lines of every image.

Rendered live from the products (what the API streams while a request runs, or when no file is
there), and, once the request completes, written once into the media store by the
``request_finished`` task, so a download of a completed request is a stream of stored bytes:
from any API node, with a length, a validator and byte ranges, at no database cost.

A completed request's rows change only through a retry, which completes it again (its
``completions`` count moves), and the rows' URLs depend on a few settings; the file's key and
ETag hold a digest of both (:func:`generation`), so a retried request, or an API node with other
URL settings, never serves a file written for something else: it streams live instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from imgbatch.core.logs import log_event
from imgbatch.core.settings import Settings
from imgbatch.domain.images import image_json, image_views, variant_urls
from imgbatch.domain.metadata import metadata_object
from imgbatch.domain.services import Services
from imgbatch.domain.status import PAGE_ROWS, page_key, product_json
from imgbatch.domain.urls import output_urls
from imgbatch.imaging.profiles import Profile, default_profile
from imgbatch.models.products import ProductRecord, ProductRepository
from imgbatch.models.requests import RequestRecord, RequestStatus
from imgbatch.sheets import NAME_COLUMN, SERIAL_COLUMN, URLS_COLUMN, neutralize_cell
from imgbatch.sheets.shopify import URL_COLUMNS as SHOPIFY_URL_COLUMNS
from imgbatch.storage import RESULTS_PREFIX

logger = logging.getLogger(__name__)

OUTPUT_COLUMN = "Output Image Urls"
ERRORS_COLUMN = "Errors"
WARNINGS_COLUMN = "Warnings"
# Bumped when a file's content changes for the same rows, so files of the old format are not
# served by a new release.
_FORMAT = "2"
# Written to disk in pieces of this many rows; the file then goes to the store in one put.
_FLUSH_ROWS = 1024

Kind = Literal["csv", "failed", "jsonl", "shopify"]


@dataclass(frozen=True)
class ResultFile:
    kind: Kind
    name: str  # the object's name in the request's folder
    media_type: str


RESULT_FILES: Final[dict[Kind, ResultFile]] = {
    "csv": ResultFile("csv", "results.csv", "text/csv; charset=utf-8"),
    "failed": ResultFile("failed", "failed.csv", "text/csv; charset=utf-8"),
    "jsonl": ResultFile("jsonl", "results.jsonl", "application/x-ndjson"),
    # Only for a request uploaded as a Shopify product CSV (RequestRecord.shopify_header).
    "shopify": ResultFile("shopify", "shopify.csv", "text/csv; charset=utf-8"),
}


def request_profile(settings: Settings, record: RequestRecord) -> Profile:
    """The profile snapshot the request was made with (requests from before: the default)."""
    return record.profile or default_profile(settings.jpeg_quality)


def generation(settings: Settings, record: RequestRecord) -> str:
    """What a completed request's result files are a function of, as a short digest."""
    parts = (
        _FORMAT,
        record.id,
        str(record.completions),
        str(settings.public_base_url),
        str(settings.media_base_url),
        str(settings.report_gps),
        str(settings.jpeg_quality),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def result_key(settings: Settings, record: RequestRecord, kind: Kind) -> str:
    return f"{generation_folder(settings, record)}{RESULT_FILES[kind].name}"


def generation_folder(settings: Settings, record: RequestRecord) -> str:
    """Where the files of the request's current generation are: the result files, and its
    status pages (domain.status)."""
    return f"{results_folder(record.id)}{generation(settings, record)}/"


def results_folder(request_id: str) -> str:
    """Every generation of the request's files: what a new completion and expiry delete."""
    return f"{RESULTS_PREFIX}{request_id}/"


def etag(settings: Settings, record: RequestRecord, kind: Kind) -> str:
    """A strong validator for a completed request's file: the same bytes whether the file is
    streamed from the store or rendered live (both render the same rows the same way)."""
    return f'"{generation(settings, record)}-{kind}"'


def _csv_line(*, guard: bool = True) -> Callable[[list[str]], str]:
    """A function that renders one CSV line, reusing one buffer. ``guard=False``: cells as they
    are, for the Shopify file (a formula guard's quote would change the cell, and that file is
    for Shopify's import, not a spreadsheet)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: list[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([neutralize_cell(cell) for cell in cells] if guard else cells)
        return buffer.getvalue()

    return line


def _header(settings: Settings, record: RequestRecord) -> tuple[list[str], list[str]]:
    """The result CSV's header, and the names of its secondary variants' columns."""
    # One column per non-primary variant, after the primary's: a default request's CSV keeps
    # exactly the shape it always had.
    variants = request_profile(settings, record).secondary
    header = [
        *(name for name, _ in record.columns),
        OUTPUT_COLUMN,
        *(variant.column for variant in variants),
        ERRORS_COLUMN,
        WARNINGS_COLUMN,
    ]
    return header, [variant.name for variant in variants]


async def result_rows(
    settings: Settings, record: RequestRecord, products: ProductRepository
) -> AsyncIterator[str]:
    """The result CSV, one line at a time, so memory stays flat however many products."""
    line = _csv_line()
    header, secondary = _header(settings, record)
    yield line(header)
    async for product in products.iterate(record.id):
        yield line(_result_cells(settings, record, product, secondary))


async def failed_rows(record: RequestRecord, products: ProductRepository) -> AsyncIterator[str]:
    """The input rows with at least one failed image, as uploaded: fix them, upload again."""
    line = _csv_line()
    yield line([name for name, _ in record.columns])
    async for product in products.iterate(record.id):
        if product.errors:
            yield line(_input_cells(record, product))


async def result_lines(
    settings: Settings, record: RequestRecord, products: ProductRepository
) -> AsyncIterator[str]:
    """Every image record, one JSON object per line, in input order."""
    metadata = metadata_object(record.metadata_json)
    async for product in products.iterate(record.id):
        yield _json_lines(settings, product, metadata)


def _json_lines(settings: Settings, product: ProductRecord, metadata: dict[str, Any] | None) -> str:
    lines = []
    for view in image_views(settings, product):
        data = image_json(
            view, settings, serial_number=product.serial_number, product_name=product.product_name
        )
        if metadata is not None:  # no null on every line of a large request without any
            data["metadata"] = metadata
        lines.append(json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n")
    return "".join(lines)


def _result_cells(
    settings: Settings, record: RequestRecord, product: ProductRecord, secondary: list[str]
) -> list[str]:
    outputs = ",".join(
        url or ""
        for url in (
            output_urls(settings, product.output_keys)
            if product.status.is_final
            else [None] * len(product.input_image_urls)
        )
    )
    variants = [
        ",".join(url or "" for url in variant_urls(settings, product, name)) for name in secondary
    ]
    errors = "; ".join(f"{e.url} -> {e.code}: {e.message}" for e in product.errors)
    warnings = "; ".join(
        f"{url} -> {warning.code}: {warning.message}"
        for url, outcome in zip(product.input_image_urls, product.images, strict=False)
        if outcome is not None
        for warning in outcome.warnings
    )
    return [*_input_cells(record, product), outputs, *variants, errors, warnings]


async def shopify_rows(
    settings: Settings, record: RequestRecord, products: ProductRepository
) -> AsyncIterator[str]:
    """The uploaded Shopify file, its rows in order, with every ``Image Src`` and ``Variant
    Image`` that has an output replaced by the primary variant's URL; nothing else changes."""
    header = record.shopify_header or []
    line = _csv_line(guard=False)
    yield line(header)
    url_columns = _shopify_url_columns(header)
    async for product in products.iterate(record.id):
        yield "".join(map(line, _shopify_cells(settings, product, url_columns)))


def _shopify_url_columns(header: list[str]) -> list[int]:
    return [index for index, name in enumerate(header) if name.strip() in SHOPIFY_URL_COLUMNS]


def _shopify_cells(
    settings: Settings, product: ProductRecord, url_columns: list[int]
) -> list[list[str]]:
    done = product.status.is_final
    outputs = output_urls(settings, product.output_keys) if done else []
    hosted = {
        url: output
        for url, output in zip(product.input_image_urls, outputs, strict=False)
        if output is not None
    }
    rows = []
    for source in product.source_rows or []:
        cells = list(source)
        for index in url_columns:
            if index < len(cells) and cells[index].strip() in hosted:
                cells[index] = hosted[cells[index].strip()]
        rows.append(cells)
    return rows


def _input_cells(record: RequestRecord, product: ProductRecord) -> list[str]:
    required = {
        SERIAL_COLUMN: str(product.serial_number),
        NAME_COLUMN: product.product_name,
        URLS_COLUMN: ",".join(product.input_image_urls),
    }
    return [
        required[role] if role else product.extra.get(name, "") for name, role in record.columns
    ]


async def write_result_files(svc: Services, request_id: str) -> bool:
    """Render a completed request's three files, and the products of its status pages
    (domain.status), in one pass over its products and store them; False if the request is not
    completed. Repeatable: a redelivered task writes the same bytes again under the same
    keys."""
    record = await svc.requests.get(request_id)
    if record is None or record.status != RequestStatus.COMPLETED:
        return False
    settings = svc.settings
    header, secondary = _header(settings, record)
    shopify = record.shopify_header is not None
    kinds: list[Kind] = [kind for kind in RESULT_FILES if shopify or kind != "shopify"]
    with tempfile.TemporaryDirectory(prefix="imgbatch-results-") as tmp:
        paths = {kind: Path(tmp) / RESULT_FILES[kind].name for kind in kinds}
        pages: list[Path] = []
        files = {kind: path.open("w", encoding="utf-8", newline="") for kind, path in paths.items()}
        try:
            line = _csv_line()
            shopify_line = _csv_line(guard=False)
            url_columns = _shopify_url_columns(record.shopify_header or [])
            pending: dict[Kind, list[str]] = {
                "csv": [line(header)],
                "failed": [line([name for name, _ in record.columns])],
                "jsonl": [],
            }
            if shopify:
                pending["shopify"] = [shopify_line(record.shopify_header or [])]
            rows = 0
            metadata = metadata_object(record.metadata_json)
            page: list[str] = []
            async for product in svc.products.iterate(record.id):
                page.append(product_json(settings, product))
                if len(page) == PAGE_ROWS:
                    pages.append(_write_page(Path(tmp), len(pages), page))
                pending["csv"].append(line(_result_cells(settings, record, product, secondary)))
                if product.errors:
                    pending["failed"].append(line(_input_cells(record, product)))
                pending["jsonl"].append(_json_lines(settings, product, metadata))
                if shopify:
                    cells = _shopify_cells(settings, product, url_columns)
                    pending["shopify"].append("".join(map(shopify_line, cells)))
                rows += 1
                if rows % _FLUSH_ROWS == 0:
                    _flush(files, pending)
            _flush(files, pending)
            if page:
                pages.append(_write_page(Path(tmp), len(pages), page))
        finally:
            for handle in files.values():
                handle.close()
        # Older generations (before a retry) are never served again: gone before the new ones.
        await svc.store.delete_prefix(results_folder(record.id))
        # The status pages first: a client that sees the stored CSV sees them too.
        folder = generation_folder(settings, record)
        for index, path in enumerate(pages):
            await svc.store.put_file(
                page_key(folder, index),
                path,
                content_type="application/x-ndjson",
                cache_control="private, no-cache",
            )
        for kind, path in paths.items():
            await svc.store.put_file(
                result_key(settings, record, kind),
                path,
                content_type=RESULT_FILES[kind].media_type,
                cache_control="private, no-cache",
            )
    if await svc.requests.get(record.id) is None:
        # Deleted while these were written (domain.deletion): its removal ran before they
        # existed, so nothing else would ever remove them.
        await svc.store.delete_prefix(results_folder(record.id))
        return False
    log_event(logger, "request.result_files", request_id=request_id, products=rows)
    return True


def _write_page(folder: Path, index: int, products: list[str]) -> Path:
    """One stored status page's products, one JSON object per line (no line end after the
    last: the reader splits on them); empties ``products`` for the next page."""
    path = folder / f"status-{index}.jsonl"
    path.write_text("\n".join(products), encoding="utf-8")
    products.clear()
    return path


def _flush(files: dict[Kind, io.TextIOWrapper], pending: dict[Kind, list[str]]) -> None:
    for kind, lines in pending.items():
        files[kind].write("".join(lines))
        lines.clear()
