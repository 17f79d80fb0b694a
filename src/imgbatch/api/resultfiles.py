"""Serving a completed request's result files: from the media store when the file is there
(``Content-Length``, ``Range``/206, ``ETag``/304), rendered live otherwise, with the same bytes
and the same ``ETag``.

Only a completed request's files get a validator: its rows are fixed until a retry completes
it again, which changes the ETag (:func:`domain.results.generation`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from imgbatch.core.errors import RangeNotSatisfiable
from imgbatch.core.settings import Settings
from imgbatch.domain.results import RESULT_FILES, Kind, etag, result_key
from imgbatch.models.requests import RequestRecord
from imgbatch.storage import MediaStore

# Clients revalidate each time (a retry changes the file) and get a 304 while it has not.
CACHE_CONTROL = "private, no-cache"
# Rows per chunk of a download rendered live (see chunked).
STREAM_CHUNK_ROWS = 256
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


async def serve_result_file(
    request: Request,
    settings: Settings,
    store: MediaStore,
    record: RequestRecord,
    kind: Kind,
    disposition: str,
    live: Callable[[], AsyncIterator[str]],
) -> Response:
    tag = etag(settings, record, kind)
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL, "Content-Disposition": disposition}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    media_type = RESULT_FILES[kind].media_type
    key = result_key(settings, record, kind)
    size = await store.size(key)
    stored = None
    if size is not None:
        byte_range = _byte_range(request, tag, size)
        stored = await store.open(key, byte_range)
    if stored is None:
        # Not written yet (the completion task runs after the request completes), or written
        # for other settings: the same rows, rendered from the products.
        return StreamingResponse(chunked(live()), media_type=media_type, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    if byte_range is None:
        headers["Content-Length"] = str(stored.size)
        return StreamingResponse(stored.chunks, media_type=media_type, headers=headers)
    start, end = byte_range
    headers["Content-Length"] = str(end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    return StreamingResponse(stored.chunks, status_code=206, media_type=media_type, headers=headers)


def _matches(header: str | None, tag: str) -> bool:
    """``If-None-Match``: weak comparison, as RFC 9110 asks for it."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == tag for candidate in header.split(","))


def _byte_range(request: Request, tag: str, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, ``(start, end)`` with ``end`` exclusive; None for the
    whole file: no Range, one we do not serve (several ranges, another unit: RFC 9110 lets a
    server ignore those), or an ``If-Range`` that names another version."""
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if not header or (if_range is not None and if_range.strip() != tag):
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # a suffix: the last n bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # not a valid range at all: ignored, as RFC 9110 says
    if start >= size:
        raise _unsatisfiable(size)
    return start, size if last == "" else min(int(last) + 1, size)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the range starts past the end of the file ({size} bytes)",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def chunked(lines: AsyncIterator[str], rows: int = STREAM_CHUNK_ROWS) -> AsyncIterator[str]:
    """``rows`` lines per chunk: every chunk a StreamingResponse sends passes through each
    middleware's ``send`` and is one socket write, and sent per line that was a third of the
    download's CPU. A few hundred rows keep memory flat all the same."""
    chunk: list[str] = []
    async for line in lines:
        chunk.append(line)
        if len(chunk) >= rows:
            yield "".join(chunk)
            chunk.clear()
    if chunk:
        yield "".join(chunk)
