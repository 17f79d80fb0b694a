"""Per-owner activity by the minute, and the counts over requests that ``GET /api/stats`` shows.

Images done and failed are counted into one small document per (owner, minute), upserted once
per finished product. Reading "the last 15 minutes" or "failures by code over 24 hours" is then
at most 1,440 documents on an index, however many products the owner has: a query over product
``finished_at`` would have to walk every product of every request touched in the window (and
products do not carry their owner). The documents expire after a day (TTL index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel
from pymongo import ASCENDING, IndexModel

from imgbatch.models.db import ACTIVITY, REQUESTS, Database, expires_index
from imgbatch.models.requests import RequestStatus, now

# Long enough for "failures over the last 24 h" whatever minute the question is asked in.
KEEP_FOR = timedelta(hours=25)
UNFINISHED = [RequestStatus.PENDING, RequestStatus.IN_PROGRESS]


class ActivityMinute(BaseModel):
    minute: datetime
    done: int = 0
    failed: int = 0
    codes: dict[str, int] = {}
    # Catalogue-quality warnings of the images done, by code.
    warnings: dict[str, int] = {}


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class ActivityRepository:
    COLLECTION: ClassVar[str] = ACTIVITY
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        IndexModel([("owner", ASCENDING), ("minute", ASCENDING)]),
        expires_index("expires_at"),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def record(
        self,
        owner: str,
        *,
        done: int,
        failed: Mapping[str, int],
        warnings: Mapping[str, int] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Count images into their owner's current minute."""
        minute = minute_of(at or now())
        increments: dict[str, int] = {"done": done, "failed": sum(failed.values())}
        increments.update({f"codes.{code}": n for code, n in failed.items()})
        increments.update({f"warnings.{code}": n for code, n in (warnings or {}).items()})
        await self._collection.update_one(
            {"_id": f"{owner}:{minute:%Y%m%d%H%M}"},
            {
                "$inc": increments,
                "$setOnInsert": {
                    "owner": owner,
                    "minute": minute,
                    "expires_at": minute + KEEP_FOR,
                },
            },
            upsert=True,
        )

    async def since(self, owner: str, start: datetime) -> list[ActivityMinute]:
        cursor = self._collection.find(
            {"owner": owner, "minute": {"$gte": minute_of(start)}}, {"_id": 0}
        ).sort("minute", 1)
        return [ActivityMinute.model_validate(doc) async for doc in cursor]


class RequestStatsRepository:
    """Counts over the requests collection for one owner (``GET /api/stats``) or for everyone
    (``GET /metrics``)."""

    COLLECTION: ClassVar[str] = REQUESTS
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        # An owner's requests by status, oldest first (GET /api/stats).
        IndexModel([("owner", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING)]),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def by_status(self, owner: str) -> dict[str, int]:
        cursor = await self._collection.aggregate(
            [{"$match": {"owner": owner}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        )
        return {str(row["_id"]): int(row["n"]) async for row in cursor}

    async def oldest_created(self, owner: str, status: RequestStatus) -> datetime | None:
        query: dict[str, Any] = {"owner": owner, "status": status}
        cursor = self._collection.find(query, {"created_at": 1}).sort("created_at", 1).limit(1)
        docs = await cursor.to_list()
        return docs[0]["created_at"] if docs else None

    async def count_unfinished(self) -> int:
        """Requests accepted and not finished yet, of every owner."""
        # One equality count per status: the embedded server plans equalities on an index.
        return sum([await self._collection.count_documents({"status": s}) for s in UNFINISHED])
