"""Staged sheet rows: the validated rows of an upload, stored as a few large chunk documents.

Inserting 100k product documents takes far longer than an HTTP client should wait, so the upload
stores rows in chunks (a few hundred writes at most) and the dispatcher expands them into
products in the background. Chunks are deleted once their products exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import bson
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, IndexModel

from imgbatch.models.db import SHEET_CHUNKS, Database

# A chunk closes at 1,000 rows or once its rows' UTF-8 bytes reach 4 MB. One row adds at most
# its name (the csv module's 128 K-character field limit, 512 KB), 20 URLs of 2 KB, its extra
# cells (MAX_EXTRA_BYTES_PER_ROW) and field names, so a chunk stays far under MongoDB's 16 MB
# document limit whatever a sheet holds.
CHUNK_MAX_ROWS = 1000
CHUNK_MAX_BYTES = 4 * 1024 * 1024
# Field names and fixed-size values of one staged row, beyond its strings.
ROW_OVERHEAD_BYTES = 256


def encode_chunk(request_id: str, seq: int, rows: list[dict[str, Any]]) -> bytes:
    """One chunk document as BSON: the upload's parser process encodes, the API only sends."""
    return bson.encode(
        {
            "_id": ObjectId(),
            "request_id": request_id,
            "seq": seq,
            "rows": rows,
            "staged_at": datetime.now(UTC),
        }
    )


class StagedChunkRepository:
    COLLECTION: ClassVar[str] = SHEET_CHUNKS
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        IndexModel([("request_id", ASCENDING), ("seq", ASCENDING)], unique=True),
        # The reconciler's sweep of abandoned uploads.
        IndexModel([("staged_at", ASCENDING)]),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def stage_encoded(self, document: bytes) -> None:
        """Insert a chunk made by :func:`encode_chunk` (in another process) as it is."""
        await self._collection.insert_one(RawBSONDocument(document))

    async def chunks(self, request_id: str) -> AsyncIterator[list[dict[str, Any]]]:
        cursor = self._collection.find({"request_id": request_id}, batch_size=2).sort("seq", 1)
        async for doc in cursor:
            yield list(doc["rows"])

    async def discard(self, request_id: str) -> None:
        await self._collection.delete_many({"request_id": request_id})

    async def stale_request_ids(self, *, older_than: timedelta) -> list[str]:
        """Requests with chunks staged longer ago than any upload takes."""
        # A range on the staged_at index, reading only the ids of what it finds.
        cursor = self._collection.find(
            {"staged_at": {"$lt": datetime.now(UTC) - older_than}}, {"request_id": 1, "_id": 0}
        )
        return list(dict.fromkeys([str(doc["request_id"]) async for doc in cursor]))
