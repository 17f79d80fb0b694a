"""Temporary objects (originals of single-image jobs): a small index the sweeper walks, so it
never has to scan every request to find the few that still hold one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.db import TEMP_OBJECTS, Database
from models.requests import now


class TempObject(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    key: str = Field(alias="_id")
    request_id: str


class TempObjectRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[TEMP_OBJECTS]

    async def add(self, key: str, request_id: str) -> None:
        await self._collection.update_one(
            {"_id": key},
            {"$set": {"request_id": request_id, "created_at": now()}},
            upsert=True,
        )

    async def oldest(self, limit: int = 500) -> list[TempObject]:
        cursor = self._collection.find({}).limit(limit)
        return [TempObject.model_validate(doc) async for doc in cursor]

    async def remove(self, key: str) -> None:
        await self._collection.delete_one({"_id": key})
