"""Reading an uploaded sheet into staged chunks: validated rows, stored a chunk at a time.

Nothing is staged once a row is known bad (the rest is only validated, to report every error),
and a refused sheet leaves no chunk behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from imgbatch.core.errors import UnprocessableEntity
from imgbatch.core.settings import Settings
from imgbatch.models.staging import (
    CHUNK_MAX_BYTES,
    CHUNK_MAX_ROWS,
    ROW_OVERHEAD_BYTES,
    StagedChunkRepository,
)
from imgbatch.netguard import literal_host_reason
from imgbatch.sheets import (
    SheetFormatError,
    SheetLimits,
    SheetReader,
    SheetRow,
    open_sheet,
    utf8_length,
)


@dataclass(frozen=True)
class StagedSheet:
    columns: list[tuple[str, str | None]]
    products: int
    images: int
    shopify_header: list[str] | None = None


def sheet_limits(settings: Settings) -> SheetLimits:
    return SheetLimits(
        max_rows=settings.max_csv_rows,
        max_urls_per_row=settings.max_urls_per_row,
        max_url_length=settings.max_url_length,
        max_columns=settings.max_csv_columns,
        max_extra_bytes=settings.max_extra_bytes_per_row,
        url_check=None if settings.allow_private_networks else literal_host_reason,
    )


async def stage_sheet(
    chunks: StagedChunkRepository, request_id: str, stream: BinaryIO, limits: SheetLimits
) -> StagedSheet:
    """Validate and stage the sheet; 422 (and nothing kept) if it or any row is invalid."""
    try:
        reader = await asyncio.to_thread(open_sheet, stream, limits)
        products, images = await _stage_rows(request_id, reader, chunks)
    except SheetFormatError as exc:
        await chunks.discard(request_id)
        raise UnprocessableEntity(exc.message) from exc
    if reader.error_count:
        await chunks.discard(request_id)
        raise UnprocessableEntity(_row_errors(reader))
    return StagedSheet(
        columns=reader.column_roles,
        products=products,
        images=images,
        shopify_header=reader.shopify_header,
    )


async def _stage_rows(
    request_id: str,
    reader: SheetReader,
    chunks: StagedChunkRepository,
) -> tuple[int, int]:
    rows = reader.rows()
    products = images = seq = 0
    # The write of one chunk runs while the next is parsed: parsing (here) and storing (the
    # database's CPU) overlap instead of taking turns, on two cores nearly halving the wait.
    staging: asyncio.Task[None] | None = None
    try:
        while True:
            # Parsing is CPU work: do it off the event loop, one chunk at a time.
            batch = await asyncio.to_thread(_next_chunk, rows)
            if staging is not None:
                await staging
                staging = None
            if not batch:
                return products, images
            if reader.error_count == 0:  # once the sheet is known bad, only validation goes on
                documents = [_staged_row(request_id, row) for row in batch]
                staging = asyncio.create_task(chunks.stage(request_id, seq, documents))
                seq += 1
            products += len(batch)
            images += sum(len(row.image_urls) for row in batch)
    finally:
        # A parse error: the write in flight is let finish, so the caller's discard of the
        # request's chunks comes after it and finds it (its own error is the one reported).
        if staging is not None:
            with contextlib.suppress(Exception):
                await staging


def _next_chunk(rows: Iterator[SheetRow]) -> list[SheetRow]:
    batch: list[SheetRow] = []
    size = 0
    for row in rows:
        batch.append(row)
        # UTF-8 bytes, as MongoDB stores them, of everything a row brings: a chunk sized by
        # characters and without the extras could pass the 16 MB document limit (a 500).
        size += (
            sum(utf8_length(url) for url in row.image_urls)
            + utf8_length(row.product_name)
            + row.extra_bytes
            + ROW_OVERHEAD_BYTES
        )
        if len(batch) >= CHUNK_MAX_ROWS or size >= CHUNK_MAX_BYTES:
            break
    return batch


def _staged_row(request_id: str, row: SheetRow) -> dict[str, Any]:
    """A row as staged: its own fields only. The dispatcher makes the product from it
    (``ProductRecord`` fills in the rest), so the upload neither builds nor encodes the ~15
    fields every new product has the same value in: a third of its BSON, and of the database's
    work on each chunk. ``request_id`` stays, so that a dispatcher of the previous release can
    still read the chunk during an upgrade."""
    staged: dict[str, Any] = {
        "request_id": request_id,
        "serial_number": row.serial_number,
        "position": row.position,
        "line": row.line,
        "product_name": row.product_name,
        "input_image_urls": row.image_urls,
    }
    if row.extra:
        staged["extra"] = row.extra
    if row.source_rows is not None:
        staged["source_rows"] = row.source_rows
    return staged


def _row_errors(reader: SheetReader) -> dict[str, Any]:
    listed = [{"line": e.line, "column": e.column, "reason": e.reason} for e in reader.errors]
    return {
        "message": f"the sheet has {reader.error_count} invalid row(s); nothing was stored",
        "errors": listed,
        "total_errors": reader.error_count,
        "omitted_errors": reader.error_count - len(listed),
    }
