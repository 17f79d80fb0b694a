"""Temporary objects (originals of single-image jobs): a small index the sweeper walks, so it
never has to scan every request to find the few that still hold one.

Each entry says when it may go at the earliest (``not_before``), and the sweeper reads only the
entries past that, on an index; one whose job is not final yet, or not for long enough, is
pushed back instead of being read again at every sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, IndexModel

from imgbatch.models.db import TEMP_OBJECTS, Database
from imgbatch.models.requests import now


class TempObject(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    key: str = Field(alias="_id")
    request_id: str


class TempObjectRepository:
    COLLECTION: ClassVar[str] = TEMP_OBJECTS
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        # The sweeper reads only the entries past their earliest deletion time.
        IndexModel([("not_before", ASCENDING)])
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def add(self, key: str, request_id: str, *, not_before: datetime) -> None:
        await self._collection.update_one(
            {"_id": key},
            {"$set": {"request_id": request_id, "created_at": now(), "not_before": not_before}},
            upsert=True,
        )

    async def due(self, limit: int = 500) -> list[TempObject]:
        """Entries whose earliest deletion time has passed, earliest first."""
        cursor = (
            self._collection.find({"not_before": {"$lt": now()}}).sort("not_before", 1).limit(limit)
        )
        return [TempObject.model_validate(doc) async for doc in cursor]

    async def postpone(self, key: str, until: datetime) -> None:
        await self._collection.update_one({"_id": key}, {"$set": {"not_before": until}})

    async def remove(self, key: str) -> None:
        await self._collection.delete_one({"_id": key})
