"""An upload's parse in a process of its own: chunks stream back as BSON the API inserts as
is, refusals and row errors come back whole, and the child never outlives its upload."""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import time

import bson
import psutil
import pytest

from imgbatch.core.settings import Settings
from imgbatch.domain.sheet_parse import (
    _CHILD_PRELOAD,
    PARSERS_PER_PROCESS,
    Chunk,
    Parsed,
    parse_in_child,
    start_parser_server,
)
from imgbatch.domain.staging import sheet_limits
from imgbatch.sheets import SheetFormatError, SheetLimits


def _sheet(rows: int, *, bad_line: int | None = None) -> io.BytesIO:
    lines = ["S. No.,Product Name,Input Image Urls"]
    for serial in range(1, rows + 1):
        urls = f"https://shop.example/{serial}/a.jpg,https://shop.example/{serial}/b.jpg"
        if serial + 1 == bad_line:  # the header is line 1
            urls = "ftp://shop.example/not-http.jpg"
        lines.append(f'{serial},Product {serial},"{urls}"')
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def _collect(sheet: io.BytesIO, limits: SheetLimits) -> tuple[list[Chunk], Parsed]:
    async def run() -> tuple[list[Chunk], Parsed]:
        chunks: list[Chunk] = []
        async with parse_in_child(sheet, "req-1", limits) as messages:
            async for message in messages:
                if isinstance(message, Parsed):
                    return chunks, message
                chunks.append(message)
        raise AssertionError("no Parsed at the end")

    return asyncio.run(run())


def test_rows_come_back_as_chunk_documents_in_order_then_the_totals() -> None:
    chunks, parsed = _collect(_sheet(2500), SheetLimits())

    assert [chunk.seq for chunk in chunks] == [0, 1, 2]
    documents = [bson.decode(chunk.document) for chunk in chunks]
    assert [len(doc["rows"]) for doc in documents] == [1000, 1000, 500]
    assert {doc["request_id"] for doc in documents} == {"req-1"}
    assert len({doc["_id"] for doc in documents}) == 3
    last = documents[2]["rows"][-1]
    assert last == {
        "request_id": "req-1",
        "serial_number": 2500,
        "position": 2499,
        "line": 2501,
        "product_name": "Product 2500",
        "input_image_urls": [
            "https://shop.example/2500/a.jpg",
            "https://shop.example/2500/b.jpg",
        ],
    }
    assert (parsed.products, parsed.images, parsed.error_count) == (2500, 5000, 0)
    assert parsed.columns == [
        ("S. No.", "S. No."),
        ("Product Name", "Product Name"),
        ("Input Image Urls", "Input Image Urls"),
    ]


def test_after_a_bad_row_nothing_more_is_sent_but_every_row_is_still_checked() -> None:
    chunks, parsed = _collect(_sheet(2500, bad_line=1500), SheetLimits())

    # The first chunk was made before the bad row was read; the caller discards it.
    assert [chunk.seq for chunk in chunks] == [0]
    assert parsed.error_count == 1
    assert parsed.errors[0].line == 1500
    assert "http" in parsed.errors[0].reason
    assert parsed.products == 2499


def test_a_file_that_is_no_sheet_is_refused_with_its_reason() -> None:
    with pytest.raises(SheetFormatError, match="no data rows"):
        _collect(io.BytesIO(b"S. No.,Product Name,Input Image Urls\n"), SheetLimits())


def _dies(url: str) -> str | None:
    # Pickled by reference: runs only in the parser's process, as a crash there would.
    os._exit(3)


def test_a_parser_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="exited with code 3"):
        _collect(_sheet(10), SheetLimits(url_check=_dies))


def _parsers() -> set[int]:
    """Our upload parsers: the forkserver's children."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and child.ppid() != os.getpid():
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_an_upload_left_early_kills_its_parser() -> None:
    start_parser_server()
    before = _parsers()

    async def leave_after_first_chunk() -> set[int]:
        async with parse_in_child(_sheet(60_000), "req-2", SheetLimits()) as messages:
            async for message in messages:
                assert isinstance(message, Chunk)
                return _parsers() - before
        raise AssertionError("no chunk came")

    running = asyncio.run(leave_after_first_chunk())
    assert len(running) == 1
    deadline = time.monotonic() + 30
    while _parsers() & running:
        assert time.monotonic() < deadline, "the parser outlived its upload"
        time.sleep(0.05)


def test_uploads_beyond_the_cap_wait_for_a_parser() -> None:
    start_parser_server()
    before = _parsers()
    cap = PARSERS_PER_PROCESS

    async def run() -> tuple[int, int, list[int]]:
        release = asyncio.Event()
        first_chunks: list[int] = []

        async def upload(number: int) -> int:
            async with parse_in_child(_sheet(3000), f"req-{number}", SheetLimits()) as messages:
                async for message in messages:
                    if isinstance(message, Parsed):
                        return message.products
                    if message.seq == 0:
                        first_chunks.append(number)
                        await release.wait()
            raise AssertionError("no Parsed at the end")

        uploads = [asyncio.create_task(upload(number)) for number in range(cap + 1)]
        deadline = time.monotonic() + 60
        while len(first_chunks) < cap:
            assert time.monotonic() < deadline, "the first uploads never got a parser"
            await asyncio.sleep(0.05)
        # Uncapped, the last upload's parser sends its first chunk within a second or so.
        waited_until = time.monotonic() + 3
        while len(first_chunks) == cap and time.monotonic() < waited_until:
            await asyncio.sleep(0.05)
        held, running = len(first_chunks), len(_parsers() - before)
        release.set()
        return held, running, list(await asyncio.gather(*uploads))

    held, running, products = asyncio.run(run())
    assert (held, running) == (cap, cap)
    assert products == [3000] * (cap + 1)


def test_the_forkserver_preloads_the_url_check_a_child_unpickles() -> None:
    # multiprocessing skips a preload that fails to import, so a renamed module would make
    # every upload's child import it again: 0.4 s of CPU for the netguard package
    # (bench/README.md, round seven).
    check = sheet_limits(Settings(allow_private_networks=False)).url_check
    assert check is not None
    preloaded = [importlib.import_module(name).__name__ for name in _CHILD_PRELOAD]
    assert any(check.__module__.startswith(f"{name}.") for name in preloaded), preloaded
