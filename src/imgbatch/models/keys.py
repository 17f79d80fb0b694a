"""API keys: only a SHA-256 hash of each key is stored; the key itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, IndexModel

from imgbatch.models.db import API_KEYS, Database
from imgbatch.models.requests import now

KEY_PREFIX = "ibk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    name: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyRepository:
    COLLECTION: ClassVar[str] = API_KEYS
    INDEXES: ClassVar[Sequence[IndexModel]] = [IndexModel([("key_hash", ASCENDING)], unique=True)]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def create(self, name: str) -> tuple[ApiKeyRecord, str]:
        key = new_key()
        record = ApiKeyRecord(
            id="key_" + secrets.token_hex(8), name=name, key_hash=hash_key(key), created_at=now()
        )
        await self._collection.insert_one(record.model_dump(by_alias=True))
        return record, key

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        doc = await self._collection.find_one({"_id": key_id})
        return ApiKeyRecord.model_validate(doc) if doc else None

    async def active_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        doc = await self._collection.find_one({"key_hash": key_hash, "revoked_at": None})
        return ApiKeyRecord.model_validate(doc) if doc else None

    async def list(self) -> list[ApiKeyRecord]:
        cursor = self._collection.find({}).sort("created_at", 1)
        return [ApiKeyRecord.model_validate(doc) async for doc in cursor]

    async def revoke(self, key_id: str) -> bool:
        result = await self._collection.update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": now()}}
        )
        return result.modified_count == 1
