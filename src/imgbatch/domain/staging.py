"""Reading an uploaded sheet into staged chunks: validated rows, stored a chunk at a time.

The parse itself runs in a child process (``domain.sheet_parse``); this side stores what it
sends and decides the answer.

Nothing is staged once a row is known bad (the rest is only validated, to report every error),
and a refused sheet leaves no chunk behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from imgbatch.core.errors import UnprocessableEntity
from imgbatch.core.settings import Settings
from imgbatch.domain.sheet_parse import Parsed, parse_in_child
from imgbatch.models.staging import StagedChunkRepository
from imgbatch.netguard import literal_host_reason
from imgbatch.sheets import SheetFormatError, SheetLimits


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
        parsed = await _stage_chunks(chunks, request_id, stream, limits)
    except SheetFormatError as exc:
        await chunks.discard(request_id)
        raise UnprocessableEntity(exc.message) from exc
    if parsed.error_count:
        await chunks.discard(request_id)
        raise UnprocessableEntity(_row_errors(parsed))
    return StagedSheet(
        columns=parsed.columns,
        products=parsed.products,
        images=parsed.images,
        shopify_header=parsed.shopify_header,
    )


async def _stage_chunks(
    chunks: StagedChunkRepository, request_id: str, stream: BinaryIO, limits: SheetLimits
) -> Parsed:
    # The write of one chunk runs while the child parses the next: parsing (the child's CPU)
    # and storing (the database's) overlap instead of taking turns.
    staging: asyncio.Task[None] | None = None
    try:
        async with parse_in_child(stream, request_id, limits) as messages:
            async for message in messages:
                if staging is not None:
                    await staging
                    staging = None
                if isinstance(message, Parsed):
                    return message
                staging = asyncio.create_task(chunks.stage_encoded(message.document))
    finally:
        # A parse error: the write in flight is let finish, so the caller's discard of the
        # request's chunks comes after it and finds it (its own error is the one reported).
        if staging is not None:
            with contextlib.suppress(Exception):
                await staging
    raise RuntimeError("the sheet parser stopped without a result")


def _row_errors(parsed: Parsed) -> dict[str, Any]:
    listed = [{"line": e.line, "column": e.column, "reason": e.reason} for e in parsed.errors]
    return {
        "message": f"the sheet has {parsed.error_count} invalid row(s); nothing was stored",
        "errors": listed,
        "total_errors": parsed.error_count,
        "omitted_errors": parsed.error_count - len(listed),
    }
