"""Slots: a cap on how many of something an owner may hold at once, that concurrent callers
cannot overrun.

Counting what an owner holds and then creating one more lets every concurrent caller pass the
count. A slot is instead one document per (kind, owner, index) under a unique ``_id``: taking
one is an insert that only one caller can win, and ``cap`` indexes is ``cap`` slots. Giving a
slot back deletes it by its holder, which is idempotent, so every path that ends a holder may
release it, and a periodic repair returns the slots of holders that no longer need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from imgbatch.models.db import SLOTS, Database
from imgbatch.models.requests import now


class Take(StrEnum):
    NEW = "new"  # this call took a slot for the holder
    HELD = "held"  # the holder had one already
    FULL = "full"  # every slot is taken


@dataclass(frozen=True)
class Taken:
    outcome: Take
    slot_id: str | None = None  # the slot this call took (NEW only)


class Slot(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    kind: str
    owner: str
    holder: str
    taken_at: datetime


class SlotRepository:
    COLLECTION: ClassVar[str] = SLOTS
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        IndexModel([("kind", ASCENDING), ("owner", ASCENDING)]),
        IndexModel([("holder", ASCENDING)]),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def take(self, kind: str, owner: str, holder: str, *, cap: int) -> Taken:
        """Give ``holder`` one of ``owner``'s ``cap`` slots of ``kind``."""
        taken = {}
        async for doc in self._collection.find({"kind": kind, "owner": owner}):
            taken[doc["_id"]] = doc["holder"]
        if holder in taken.values():
            return Taken(Take.HELD)
        for index in range(cap):
            slot_id = f"{kind}:{owner}:{index}"
            if slot_id in taken:
                continue
            slot = Slot(id=slot_id, kind=kind, owner=owner, holder=holder, taken_at=now())
            try:
                await self._collection.insert_one(slot.model_dump(by_alias=True))
            except DuplicateKeyError:
                continue  # taken by a concurrent caller since we looked
            return Taken(Take.NEW, slot_id)
        return Taken(Take.FULL)

    async def give_back(self, slot_id: str) -> None:
        """Return the one slot a caller took and no longer needs (its holder may hold another,
        taken by a concurrent caller that went on)."""
        await self._collection.delete_one({"_id": slot_id})

    async def release(self, holder: str) -> None:
        """Every slot ``holder`` has: it is done."""
        await self._collection.delete_many({"holder": holder})

    async def of_kind(self, kind: str) -> list[Slot]:
        """Every slot of ``kind`` that is taken: as many as the owners' holders, so few."""
        return [Slot.model_validate(doc) async for doc in self._collection.find({"kind": kind})]
