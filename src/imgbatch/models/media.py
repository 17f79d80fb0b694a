"""Media objects: one document per (owner, source bytes, profile), for every set of outputs.

The document's id is the outputs' storage prefix (``storage.media_prefix``). It moves

    (absent) --insert, once rendered--> ready --last holder released--> deleting --> (absent)

- **No write of its own per new image.** The renderer records the document ``ready`` once its
  objects are stored, holding it for its request and recording the URL that gave the bytes (its
  ``ETag``/``Last-Modified``), so a later import of that URL can revalidate it. A worker run
  records the renders and holds of the products it finishes together in one ``insert_many`` and
  one bulk hold, just before those products' final move (``worker.products``): a write costs the
  embedded server ~1 ms of CPU whatever it carries, so per image it was most of the database's
  work. A claim document written before rendering would have doubled it. Images with the same
  bytes in one worker process wait for each other instead (``worker.images``); two processes
  that meet new bytes at the same instant may both render, and the second insert finds the
  first (same keys, same bytes) and holds it instead.
- **holders** is the reference count, as a set of request ids: ``$addToSet`` and ``$pull`` are
  idempotent, so a product that runs twice, or a retention sweep that is interrupted and runs
  again, never counts a reference twice or drops someone else's.
- The move to ``deleting`` is conditional on ``ready`` with no holders, and a holder can only be
  added to a ``ready`` document: a request that reuses the outputs and retention deleting them
  cannot both win. Whoever finds ``deleting`` waits, then renders again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, IndexModel, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from imgbatch.models.db import MEDIA, Database
from imgbatch.models.requests import now

_DUPLICATE_KEY: Final = 11000
#: How long an interrupted deletion is honoured before a renderer may take its place.
DELETE_LEASE: Final = timedelta(seconds=60)
# Reads leave the holders out: an image used by thousands of requests has thousands of them,
# and deciding whether to reuse it needs none.
_WITHOUT_HOLDERS: Final = {"holders": 0}


class MediaState(StrEnum):
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
    # imaging.quality's measures of the summary image; None for outputs made before them.
    sharpness: float | None = None
    white_border: float | None = None


class Validators(BaseModel):
    """What a source URL answered with these bytes: sent back as a conditional request."""

    etag: str | None = None
    last_modified: str | None = None
    at: datetime


class MediaRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    owner: str
    state: MediaState
    token: str | None = None  # the deletion's, while deleting
    deleting_since: datetime | None = None
    made_by: str | None = None  # the image slot that rendered it
    rendered: Rendered
    holders: list[str] = []  # not loaded by reads (see _WITHOUT_HOLDERS)
    # The URLs (as source_key digests) that gave these bytes, and what each answered.
    source_keys: list[str] = []
    validators: dict[str, Validators] = {}

    def deletion_abandoned(self) -> bool:
        since = self.deleting_since
        return since is not None and now() - since > DELETE_LEASE


@dataclass
class NewMedia:
    """A render to record, once its objects are stored (:meth:`MediaRepository.create_many`)."""

    media_id: str
    owner: str
    rendered: Rendered
    holder: str
    made_by: str  # the image slot that rendered it
    # The URLs (source_key digests) that gave these bytes, with what each answered.
    sources: dict[str, Validators] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {
            "_id": self.media_id,
            "owner": self.owner,
            "state": MediaState.READY,
            "made_by": self.made_by,
            "rendered": self.rendered.model_dump(),
            "holders": [self.holder],
            "source_keys": list(self.sources),
            "validators": {key: v.model_dump() for key, v in self.sources.items()},
        }


def _hold_update(holder: str, sources: Sequence[tuple[str, Validators]]) -> dict[str, Any]:
    update: dict[str, Any] = {"$addToSet": {"holders": holder}}
    if sources:
        update["$addToSet"]["source_keys"] = {"$each": list(dict.fromkeys(k for k, _ in sources))}
        update["$set"] = {f"validators.{key}": v.model_dump() for key, v in sources}
    return update


def _of_ids(ids: list[str]) -> dict[str, Any]:
    """A query for these ``_id``s (one id as a plain equality)."""
    return {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}


def source_key(owner: str, url: str) -> str:
    """A URL as the owner's: URLs are up to 2 KB and carry signed tokens, so only a digest."""
    return hashlib.sha256(f"{owner}\n{url}".encode()).hexdigest()


class MediaRepository:
    COLLECTION: ClassVar[str] = MEDIA
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        # Which media objects a request holds: retention releases them by this (multikey).
        IndexModel([("holders", ASCENDING)]),
        # Which ones a source URL gave: a re-import revalidates those URLs.
        IndexModel([("source_keys", ASCENDING)]),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def get(self, media_id: str) -> MediaRecord | None:
        """The record, without its holders."""
        return (await self.get_many([media_id])).get(media_id)

    async def get_many(self, media_ids: Iterable[str]) -> dict[str, MediaRecord]:
        """The records of these ids that exist, without their holders, in one read (the
        embedded server plans an ``$in`` on ``_id`` as index lookups)."""
        ids = list(dict.fromkeys(media_ids))
        if not ids:
            return {}
        cursor = self._collection.find(_of_ids(ids), _WITHOUT_HOLDERS)
        return {str(doc["_id"]): MediaRecord.model_validate(doc) async for doc in cursor}

    async def by_sources(self, keys: Iterable[str]) -> list[MediaRecord]:
        """Ready objects that one of these source URLs gave (any profile), in one read."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        cursor = self._collection.find(
            {"source_keys": {"$in": wanted}, "state": MediaState.READY}, _WITHOUT_HOLDERS
        )
        return [MediaRecord.model_validate(doc) async for doc in cursor]

    async def holders(self, media_id: str) -> list[str]:
        doc = await self._collection.find_one({"_id": media_id}, {"holders": 1})
        return list(doc["holders"]) if doc else []

    async def create_many(self, records: Sequence[NewMedia]) -> set[str]:
        """Record finished renders as ``ready``, each held by its holder, in one write; returns
        the ids that existed already (another process recorded the same bytes first)."""
        if not records:
            return set()
        docs = [record.document() for record in records]
        try:
            await self._collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(error["code"] != _DUPLICATE_KEY for error in errors):
                raise
            return {str(docs[error["index"]]["_id"]) for error in errors}
        return set()

    async def hold_many(
        self,
        media_ids: Iterable[str],
        holder: str,
        *,
        sources: Mapping[str, Sequence[tuple[str, Validators]]] | None = None,
    ) -> set[str]:
        """Add ``holder`` to ready objects (and the URLs that gave their bytes, ``sources`` by
        id), in one round trip; returns the ids it could hold: one that is not ready (any more)
        is not held. A ready object's ``rendered`` never changes: a record read before is still
        right."""
        ids = list(dict.fromkeys(media_ids))
        if not ids:
            return set()
        sources = sources or {}
        # The holds that add no source (a 304, the same bytes again: most of a re-import) are
        # one statement: the embedded server spends half the CPU per object on an $in update
        # that it does on one update per object (0.5 against 1.0 ms, bench/README.md item 4).
        plain = [media_id for media_id in ids if not sources.get(media_id)]
        updates: list[UpdateOne | UpdateMany] = [
            UpdateOne({"_id": media_id, "state": MediaState.READY}, _hold_update(holder, found))
            for media_id in ids
            if (found := sources.get(media_id))
        ]
        if plain:
            query = {**_of_ids(plain), "state": MediaState.READY}
            updates.append(UpdateMany(query, _hold_update(holder, ())))
        result = await self._collection.bulk_write(updates, ordered=False)
        if result.matched_count == len(ids):
            return set(ids)
        # Some were not ready any more: see which ones this holder now holds.
        cursor = self._collection.find(
            {"_id": {"$in": ids}, "state": MediaState.READY, "holders": holder}, {"_id": 1}
        )
        return {str(doc["_id"]) async for doc in cursor}

    async def forget_source(self, media_id: str, key: str) -> None:
        """The URL now gives other bytes: stop revalidating it against these."""
        await self._collection.update_one(
            {"_id": media_id},
            {"$pull": {"source_keys": key}, "$unset": {f"validators.{key}": ""}},
        )

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
            {"$set": {"state": MediaState.DELETING, "token": token, "deleting_since": now()}},
        )
        return token if result.modified_count else None

    async def forget(self, media_id: str, token: str) -> None:
        await self._collection.delete_one(
            {"_id": media_id, "token": token, "state": MediaState.DELETING}
        )

    async def held_by(self, holder: str, *, limit: int) -> list[str]:
        cursor = self._collection.find({"holders": holder}, {"_id": 1}).limit(limit)
        return [str(doc["_id"]) async for doc in cursor]
