"""An uploaded sheet's parse, in a process of its own, streaming encoded chunks back.

Why a process: the parse is pure-Python CPU (``csv`` and the row checks, ~1 s per 100k rows,
the stdlib floor itself). In the API's process it shared one GIL with the event loop that
receives the body and writes the chunks, so the upload's wall time was the API's CPU
(bench/README, round five, item 6). In a child it runs beside the writes, on another core, and
the child also builds and BSON-encodes each chunk, so the API only forwards bytes.

Why a forkserver: the child is forked from a small single-threaded server that has imported
this module once (a fork costs milliseconds, a fresh interpreter ~0.2 s), never from the API
itself, whose threads (the loop's executor, PyMongo's monitors) could leave a lock held in the
copy. One child per upload: it holds nothing across uploads, and a crash loses only its own.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import multiprocessing.forkserver
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, BinaryIO, Final

from imgbatch.models.staging import (
    CHUNK_MAX_BYTES,
    CHUNK_MAX_ROWS,
    ROW_OVERHEAD_BYTES,
    encode_chunk,
)
from imgbatch.sheets import (
    RowError,
    SheetFormatError,
    SheetLimits,
    SheetRow,
    open_sheet,
    utf8_length,
)

# The body goes to the child in pieces, so the API never holds a second copy of it.
_PIECE_BYTES: Final = 1024 * 1024
_CONTEXT: Final = multiprocessing.get_context("forkserver")
_started = threading.Lock()
_preloaded = False
# Imported by the forkserver, so that each child starts with them. The child unpickles its
# upload's limits, whose default URL check lives in the netguard package; that package imports
# the HTTP clients, so a child that imported it itself spent 0.4 s of CPU on it per upload
# (profiled: the parse of a 100k-row sheet took 1.9 s of the child's CPU, 1.5 s of it parsing).
_CHILD_PRELOAD: Final = (__name__, "imgbatch.netguard")
#: Parsers at once per API process; more uploads wait for a slot. Each holds its sheet and an
#: interpreter (~65 MB for 22 MB of CSV), and more of them than cores only share the CPU.
PARSERS_PER_PROCESS: Final = max(2, os.cpu_count() or 2)
_parser_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows ``seq`` of the sheet as one BSON chunk document, ready to insert."""

    seq: int
    document: bytes


@dataclass(frozen=True, slots=True)
class Parsed:
    """The end of a parse: what the request records, and every row error."""

    columns: list[tuple[str, str | None]]
    shopify_header: list[str] | None
    products: int
    images: int
    errors: list[RowError]
    error_count: int


@dataclass(frozen=True, slots=True)
class _Refused:
    message: str


def start_parser_server() -> None:
    """Start the forkserver with this module imported (blocking; the API's start-up calls it,
    so that the first upload does not pay the ~0.3 s)."""
    global _preloaded
    with _started:
        if not _preloaded:
            # The default preload is the parent's ``__main__`` (uvicorn, pytest): not needed.
            _CONTEXT.set_forkserver_preload(list(_CHILD_PRELOAD))
            _preloaded = True
        multiprocessing.forkserver.ensure_running()


@asynccontextmanager
async def parse_in_child(
    stream: BinaryIO, request_id: str, limits: SheetLimits
) -> AsyncIterator[AsyncIterator[Chunk | Parsed]]:
    """Parse ``stream`` in a child: chunks as they are made, then :class:`Parsed`.

    Raises :class:`SheetFormatError` for a file that is not a usable sheet. Leaving the block
    early (an error, a cancelled upload) kills the child.
    """
    async with _slot():
        # Started already by the API's lifespan; this restarts a forkserver that died (and
        # serves callers without a lifespan), for the cost of a liveness check.
        await asyncio.to_thread(start_parser_server)
        ours, theirs = _CONTEXT.Pipe()
        child = _CONTEXT.Process(
            target=_parse, args=(theirs, request_id, limits), name="imgbatch-sheet-parse"
        )
        try:
            await asyncio.to_thread(child.start)
            theirs.close()
            await asyncio.to_thread(_send_body, ours, stream)
            yield _messages(ours, child)
        finally:
            if child.is_alive():
                child.kill()
            if child.pid is not None:
                await asyncio.to_thread(child.join)
            ours.close()


def _slot() -> asyncio.Semaphore:
    # One semaphore per event loop (the API has one; tests start several), created lazily
    # because an asyncio primitive belongs to the loop that first waits on it.
    loop = asyncio.get_running_loop()
    return _parser_slots.setdefault(loop, asyncio.Semaphore(PARSERS_PER_PROCESS))


def _send_body(conn: Connection, stream: BinaryIO) -> None:
    while piece := stream.read(_PIECE_BYTES):
        conn.send_bytes(piece)
    conn.send_bytes(b"")


async def _messages(
    conn: Connection, child: multiprocessing.process.BaseProcess
) -> AsyncIterator[Chunk | Parsed]:
    while True:
        try:
            message = await asyncio.to_thread(conn.recv)
        except EOFError:
            await asyncio.to_thread(child.join)
            raise RuntimeError(f"the sheet parser exited with code {child.exitcode}") from None
        if isinstance(message, _Refused):
            raise SheetFormatError(message.message)
        yield message
        if isinstance(message, Parsed):
            return


def _parse(conn: Connection, request_id: str, limits: SheetLimits) -> None:
    """The child: read the body, then stream chunks and the result back."""
    body = io.BytesIO()
    while piece := conn.recv_bytes():
        body.write(piece)
    body.seek(0)
    try:
        reader = open_sheet(body, limits)
        rows = reader.rows()
        products = images = seq = 0
        while batch := next_chunk(rows):
            if reader.error_count == 0:  # once the sheet is known bad, only validation goes on
                staged = [staged_row(request_id, row) for row in batch]
                conn.send(Chunk(seq, encode_chunk(request_id, seq, staged)))
                seq += 1
            products += len(batch)
            images += sum(len(row.image_urls) for row in batch)
    except SheetFormatError as exc:
        conn.send(_Refused(exc.message))
        return
    conn.send(
        Parsed(
            columns=reader.column_roles,
            shopify_header=reader.shopify_header,
            products=products,
            images=images,
            errors=reader.errors,
            error_count=reader.error_count,
        )
    )


def next_chunk(rows: Iterator[SheetRow]) -> list[SheetRow]:
    batch: list[SheetRow] = []
    size = 0
    for row in rows:
        batch.append(row)
        # UTF-8 bytes, as MongoDB stores them, of everything a row brings: a chunk sized by
        # characters and without the extras could pass the 16 MB document limit (a 500).
        size += (
            utf8_length("".join(row.image_urls))  # one call, not one per URL
            + utf8_length(row.product_name)
            + row.extra_bytes
            + ROW_OVERHEAD_BYTES
        )
        if len(batch) >= CHUNK_MAX_ROWS or size >= CHUNK_MAX_BYTES:
            break
    return batch


def staged_row(request_id: str, row: SheetRow) -> dict[str, Any]:
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
