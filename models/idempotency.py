"""Idempotency keys for uploads: the same key and the same file give the same response.

A key is reserved before the upload is processed, so two concurrent retries of one upload
cannot both create a request. Keys expire after a day (TTL index, and checked on read because a
TTL monitor runs only once a minute).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import DuplicateKeyError

from models.db import IDEMPOTENCY_KEYS, Database
from models.requests import now

KEY_TTL = timedelta(hours=24)


class IdempotencyRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    fingerprint: str
    created_at: datetime
    response: dict[str, Any] | None = None  # None while the first upload is still being processed


class IdempotencyRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[IDEMPOTENCY_KEYS]

    @staticmethod
    def _id(owner: str, key: str) -> str:
        return f"{owner}:{key}"

    async def reserve(self, owner: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
        """Reserve the key; None when this call reserved it, else the existing record."""
        record_id = self._id(owner, key)
        await self._collection.delete_one(
            {"_id": record_id, "created_at": {"$lt": now() - KEY_TTL}}
        )
        record = IdempotencyRecord(id=record_id, fingerprint=fingerprint, created_at=now())
        try:
            await self._collection.insert_one(record.model_dump(by_alias=True))
        except DuplicateKeyError:
            doc = await self._collection.find_one({"_id": record_id})
            return IdempotencyRecord.model_validate(doc) if doc else None
        return None

    async def complete(self, owner: str, key: str, response: dict[str, Any]) -> None:
        await self._collection.update_one(
            {"_id": self._id(owner, key)}, {"$set": {"response": response}}
        )

    async def release(self, owner: str, key: str) -> None:
        await self._collection.delete_one({"_id": self._id(owner, key), "response": None})
