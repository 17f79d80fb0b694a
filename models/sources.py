"""What each owner's source URLs answered last time: ``ETag``, ``Last-Modified`` and the sha256
of the body, so the next request with that URL can ask ``If-None-Match`` /
``If-Modified-Since`` and, on ``304``, reuse the outputs of those bytes without downloading them.

Per owner, like the outputs: one customer's fetch history never shapes another's requests.
Documents expire with the results they lead to (``IMGBATCH_RESULT_TTL_DAYS``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel

from models.db import SOURCES, Database
from models.requests import now


class SourceValidators(BaseModel):
    etag: str | None = None
    last_modified: str | None = None
    sha256: str


class SourceRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[SOURCES]

    @staticmethod
    def _id(owner: str, url: str) -> str:
        # URLs are up to 2 KB and carry signed tokens: key by a digest, never store the URL.
        return hashlib.sha256(f"{owner}\n{url}".encode()).hexdigest()

    async def get_many(self, owner: str, urls: Iterable[str]) -> dict[str, SourceValidators]:
        by_id = {self._id(owner, url): url for url in urls}
        if not by_id:
            return {}
        cursor = self._collection.find({"_id": {"$in": list(by_id)}})
        return {
            by_id[str(doc["_id"])]: SourceValidators.model_validate(doc) async for doc in cursor
        }

    async def remember(
        self, owner: str, url: str, validators: SourceValidators, *, keep_for: timedelta | None
    ) -> None:
        expires_at: datetime | None = now() + keep_for if keep_for else None
        await self._collection.update_one(
            {"_id": self._id(owner, url)},
            {"$set": {**validators.model_dump(), "updated_at": now(), "expires_at": expires_at}},
            upsert=True,
        )
