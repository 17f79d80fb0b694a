"""Idempotency keys for uploads: the same key and the same upload give the same response.

A key is reserved before the upload is processed, so two concurrent retries of one upload
cannot both create a request. The reservation holds a lease: if the upload that made it died
before storing its response, a retry after the lease takes the key over instead of being told
"still being processed" for a day. Keys expire after a day: ``expires_at`` is checked on read
and a TTL index deletes them (a TTL monitor runs only once a minute).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from imgbatch.models.db import IDEMPOTENCY_KEYS, Database, expires_index
from imgbatch.models.requests import now

KEY_TTL = timedelta(hours=24)


class IdempotencyRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    fingerprint: str
    created_at: datetime
    expires_at: datetime
    # The upload holding the reservation, and until when; a reservation without a response
    # past its lease belongs to an upload that died.
    token: str | None = None
    lease_until: datetime | None = None
    response: dict[str, Any] | None = None  # None while the first upload is still being processed


class IdempotencyRepository:
    COLLECTION: ClassVar[str] = IDEMPOTENCY_KEYS
    INDEXES: ClassVar[Sequence[IndexModel]] = [expires_index("expires_at")]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    @staticmethod
    def _id(owner: str, key: str) -> str:
        return f"{owner}:{key}"

    async def get(self, owner: str, key: str) -> IdempotencyRecord | None:
        """The key's record, unless it is past its day."""
        doc = await self._collection.find_one(
            {"_id": self._id(owner, key), "expires_at": {"$gte": now()}}
        )
        return IdempotencyRecord.model_validate(doc) if doc else None

    async def reserve(
        self, owner: str, key: str, fingerprint: str, *, lease: timedelta
    ) -> str | None:
        """Reserve the key for one upload: its token, or None if another upload holds it (or
        answered it) and its lease has not run out."""
        record_id = self._id(owner, key)
        at = now()
        await self._collection.delete_one({"_id": record_id, "expires_at": {"$not": {"$gte": at}}})
        token = uuid.uuid4().hex
        record = IdempotencyRecord(
            id=record_id,
            fingerprint=fingerprint,
            created_at=at,
            expires_at=at + KEY_TTL,
            token=token,
            lease_until=at + lease,
        )
        try:
            await self._collection.insert_one(record.model_dump(by_alias=True))
        except DuplicateKeyError:
            # Taken over only if its upload never answered and its lease ran out.
            taken = await self._collection.find_one_and_update(
                {"_id": record_id, "response": None, "lease_until": {"$not": {"$gte": at}}},
                {"$set": record.model_dump(exclude={"id"})},
                return_document=ReturnDocument.AFTER,
            )
            return token if taken is not None else None
        return token

    async def complete(self, owner: str, key: str, token: str, response: dict[str, Any]) -> None:
        # Only while this upload still holds the key: one that took it over answers for it.
        await self._collection.update_one(
            {"_id": self._id(owner, key), "token": token}, {"$set": {"response": response}}
        )

    async def release(self, owner: str, key: str, token: str) -> None:
        await self._collection.delete_one(
            {"_id": self._id(owner, key), "token": token, "response": None}
        )
