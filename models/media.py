"""Media objects: one document per (owner, source bytes, profile), for every set of outputs.

The document's id is the outputs' storage prefix (``storage.media_prefix``). It moves

    (absent) --claim--> rendering --publish--> ready --last holder released--> deleting --> (absent)

- **claim** is an insert, so of two images with the same bytes exactly one renders; the other
  sees ``rendering`` and waits for ``ready``. A claim older than :data:`RENDER_LEASE` (its
  worker died) may be taken over, and so may a claim made by an earlier run of the same image.
- **holders** is the reference count, as a set of request ids: ``$addToSet`` and ``$pull`` are
  idempotent, so a product that runs twice, or a retention sweep that is interrupted and runs
  again, never counts a reference twice or drops someone else's.
- The move to ``deleting`` is conditional on ``ready`` with no holders, and a new holder can
  only be added to a ``ready`` document: a request that reuses the outputs and retention
  deleting them cannot both win. Whoever finds ``deleting`` waits and renders again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from models.db import MEDIA, Database
from models.requests import now

#: How long a claim (or an interrupted deletion) is honoured before others may take it over.
#: A render of the largest allowed image with every variant takes a few seconds; the rest is
#: slack for a busy worker.
RENDER_LEASE: Final = timedelta(seconds=60)


class MediaState(StrEnum):
    RENDERING = "rendering"
    READY = "ready"
    DELETING = "deleting"


class StoredVariant(BaseModel):
    key: str
    format: str
    width: int
    height: int
    bytes: int


class SourceInfo(BaseModel):
    format: str
    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    bytes: int
    sha256: str


class Rendered(BaseModel):
    """What one image became: shared by every image with the same bytes and profile."""

    variants: dict[str, StoredVariant]  # in the profile's order, the primary first
    source: SourceInfo
    exif: dict[str, Any] | None = None
    dominant_color: str
    placeholder: str
    operations: list[str] = []


class MediaRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    owner: str
    state: MediaState
    token: str
    claimed_by: str | None = None
    claimed_at: datetime
    holders: list[str] = []
    rendered: Rendered | None = None

    def lease_expired(self) -> bool:
        return now() - self.claimed_at > RENDER_LEASE


class MediaRepository:
    def __init__(self, db: Database) -> None:
        self._collection = db[MEDIA]

    async def get(self, media_id: str) -> MediaRecord | None:
        doc = await self._collection.find_one({"_id": media_id})
        return MediaRecord.model_validate(doc) if doc else None

    async def get_many(self, media_ids: Iterable[str]) -> dict[str, MediaRecord]:
        ids = list(dict.fromkeys(media_ids))
        if not ids:
            return {}
        cursor = self._collection.find({"_id": {"$in": ids}})
        return {str(doc["_id"]): MediaRecord.model_validate(doc) async for doc in cursor}

    async def claim(self, media_id: str, *, owner: str, claimed_by: str) -> str | None:
        """Become the one renderer of a new media object; its token, or None if it exists."""
        token = uuid.uuid4().hex
        try:
            await self._collection.insert_one(
                {
                    "_id": media_id,
                    "owner": owner,
                    "state": MediaState.RENDERING,
                    "token": token,
                    "claimed_by": claimed_by,
                    "claimed_at": now(),
                    "holders": [],
                }
            )
        except DuplicateKeyError:
            return None
        return token

    async def take_over(self, record: MediaRecord, *, claimed_by: str) -> str | None:
        """Take an abandoned claim (or deletion, or broken ready object) over; None if it moved."""
        token = uuid.uuid4().hex
        result = await self._collection.update_one(
            {"_id": record.id, "token": record.token, "state": record.state},
            {
                "$set": {
                    "state": MediaState.RENDERING,
                    "token": token,
                    "claimed_by": claimed_by,
                    "claimed_at": now(),
                }
            },
        )
        return token if result.modified_count else None

    async def publish(self, media_id: str, token: str, rendered: Rendered, holder: str) -> bool:
        """The renderer's move to ``ready``, holding it for its own request."""
        result = await self._collection.update_one(
            {"_id": media_id, "token": token, "state": MediaState.RENDERING},
            {
                "$set": {
                    "state": MediaState.READY,
                    "rendered": rendered.model_dump(),
                    "claimed_by": None,
                },
                "$addToSet": {"holders": holder},
            },
        )
        return result.modified_count == 1

    async def abandon(self, media_id: str, token: str) -> None:
        """A render that failed: let the next image with these bytes try at once."""
        await self._collection.delete_one(
            {"_id": media_id, "token": token, "state": MediaState.RENDERING, "holders": []}
        )
        # Held by others (a repair of a ready object whose files went missing): keep the
        # holders, expire the lease so the next image takes over without waiting.
        await self._collection.update_one(
            {"_id": media_id, "token": token, "state": MediaState.RENDERING},
            {"$set": {"claimed_at": now() - RENDER_LEASE * 2}},
        )

    async def hold(self, media_id: str, holder: str) -> bool:
        """Add ``holder`` to a ready object; False if it is not ready (any more).

        A ready object's ``rendered`` never changes, so a record read before is still right.
        """
        result = await self._collection.update_one(
            {"_id": media_id, "state": MediaState.READY}, {"$addToSet": {"holders": holder}}
        )
        return bool(result.matched_count)

    async def hold_many(self, media_ids: Iterable[str], holder: str) -> set[str]:
        """:meth:`hold` for several objects in one round trip; the ids it could hold."""
        ids = list(dict.fromkeys(media_ids))
        result = await self._collection.bulk_write(
            [
                UpdateOne(
                    {"_id": media_id, "state": MediaState.READY},
                    {"$addToSet": {"holders": holder}},
                )
                for media_id in ids
            ],
            ordered=False,
        )
        if result.matched_count == len(ids):
            return set(ids)
        # Some were not ready any more: see which ones this holder now holds.
        records = await self.get_many(ids)
        return {
            media_id
            for media_id, record in records.items()
            if record.state == MediaState.READY and holder in record.holders
        }

    async def release(self, media_id: str, holder: str) -> str | None:
        """Drop ``holder``; if no one holds the object any more, move it to ``deleting``.

        Returns the deletion's token when this call made that move: the caller then deletes
        the objects and calls :meth:`forget`. Safe to repeat.
        """
        await self._collection.update_one(
            {"_id": media_id, "holders": holder}, {"$pull": {"holders": holder}}
        )
        token = uuid.uuid4().hex
        result = await self._collection.update_one(
            {"_id": media_id, "state": MediaState.READY, "holders": []},
            {"$set": {"state": MediaState.DELETING, "token": token, "claimed_at": now()}},
        )
        return token if result.modified_count else None

    async def forget(self, media_id: str, token: str) -> None:
        await self._collection.delete_one(
            {"_id": media_id, "token": token, "state": MediaState.DELETING}
        )

    async def held_by(self, holder: str, *, limit: int) -> list[str]:
        cursor = self._collection.find({"holders": holder}, {"_id": 1}).limit(limit)
        return [str(doc["_id"]) async for doc in cursor]
