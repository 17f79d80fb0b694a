"""A request's audit trail: what happened to it, when, kept on the request document itself.

Kept *on* the request (a bounded array) rather than in a collection of its own: it is written
and deleted with the request, so it expires exactly when the request does (the tombstone's TTL)
with no index, no retention code and no orphans, and most entries are appended next to a write
the request gets anyway. The bound keeps a request that is reconciled or retried over and over
from growing without limit: the newest entries are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel
from pymongo import IndexModel

from imgbatch.models.db import REQUESTS, Database

AUDIT_FIELD = "audit"
MAX_ENTRIES = 200


class AuditEntry(BaseModel):
    at: datetime
    event: str
    detail: dict[str, Any] = {}


class AuditRepository:
    # Stored in the requests collection; the trail needs no index of its own.
    COLLECTION: ClassVar[str] = REQUESTS
    INDEXES: ClassVar[Sequence[IndexModel]] = []

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def append(self, request_id: str, entry: AuditEntry, *, once: str | None = None) -> bool:
        """Add ``entry`` to the request's trail; False if the request does not exist.

        ``once`` names a marker field: the entry is added only by the first call that sets it
        (e.g. the first image done, which many processes reach at about the same time).
        """
        query: dict[str, Any] = {"_id": request_id}
        update: dict[str, Any] = {
            "$push": {AUDIT_FIELD: {"$each": [entry.model_dump()], "$slice": -MAX_ENTRIES}}
        }
        if once is not None:
            query[once] = None
            update["$set"] = {once: entry.at}
        result = await self._collection.update_one(query, update)
        return result.modified_count == 1

    async def for_request(self, request_id: str) -> list[AuditEntry]:
        doc = await self._collection.find_one({"_id": request_id}, {AUDIT_FIELD: 1})
        entries = [AuditEntry.model_validate(e) for e in (doc or {}).get(AUDIT_FIELD, [])]
        # Appends from different processes can land out of order by a few milliseconds.
        return sorted(entries, key=lambda e: e.at)
