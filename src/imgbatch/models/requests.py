"""Processing requests: one document per uploaded sheet, holding its progress counters.

Counters only ever move through conditional updates, so a redelivered task never counts twice,
and the request flips to ``completed`` in exactly one call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from imgbatch.core.text import strip_control_characters
from imgbatch.imaging.profiles import Profile
from imgbatch.models.db import REQUESTS, Database, Document, expires_index

# Per task run that counts products: the last count it added (see count_product).
_COUNT_RUNS = "count_runs"


class RequestStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped by its owner: queued products are dropped unprocessed
    EXPIRED = "expired"  # past the retention period: products and outputs are gone (410)


UNFINISHED_REQUEST = frozenset({RequestStatus.PENDING, RequestStatus.IN_PROGRESS})
# Only these ever expire: a request still pending or in progress is never touched by retention.
FINISHED_REQUEST = (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)


class Priority(StrEnum):
    """How soon a request's images are processed relative to other requests."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class RequestKind(StrEnum):
    SHEET = "sheet"  # POST /api/upload: a CSV of products and image URLs
    IMAGE = "image"  # POST /api/images: one uploaded image, one product


class RequestRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    owner: str
    status: RequestStatus
    # The input header in order: (name as written, canonical role or None for an extra column).
    columns: list[tuple[str, str | None]]
    products_total: int
    images_total: int
    products_done: int = 0
    images_done: int = 0
    images_failed: int = 0
    priority: Priority = Priority.NORMAL
    webhook_url: str | None = None
    # Signs deliveries to webhook_url; handed out once, in the upload response, never shown again.
    webhook_secret: str | None = None
    # Events webhook_url asked for beyond the request's own (`webhook_events`): image.failed.
    webhook_events: list[str] = []
    # Products are staged as chunks at upload and expanded into documents by the dispatcher.
    ingested: bool = False
    dispatched_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    failure_reason: str | None = None
    # Bumped by every move to completed, so a retried request's new completion is a new event.
    completions: int = 0
    # Set with the move to a final state and cleared once its event is stored: if the notice
    # message is lost (Redis restarted), the reconciler sees the flag and sends it again.
    notice_pending: bool = False
    # Outputs and products are removed after this (None: kept forever).
    expires_at: datetime | None = None
    kind: RequestKind = RequestKind.SHEET
    # The profile's variants as they were at upload, so a later change to IMGBATCH_PROFILES or
    # IMGBATCH_JPEG_QUALITY never changes a running or retried request. None: written before
    # profiles existed, i.e. the default profile at the current quality.
    profile: Profile | None = None
    # A single-image job's original in temporary storage (never served), until it is swept.
    temp_key: str | None = None
    # The uploaded file's name as the client sent it, so a person can tell requests apart.
    file_name: str | None = None
    # The caller's own metadata (domain.metadata): the validated flat JSON object as text, so
    # its keys never have to be MongoDB field names.
    metadata_json: str | None = None
    # A Shopify product CSV's header cells as read (sheets.shopify); None for other sheets.
    shopify_header: list[str] | None = None

    @field_validator("file_name")
    @classmethod
    def _printable_file_name(cls, value: str | None) -> str | None:
        # Stored and read through here, for sheets and images alike: a name sent with ESC
        # sequences must not reach a terminal (`imgbatch status`), a page or a log as sent.
        return (strip_control_characters(value) or None) if value is not None else None

    def is_expired(self, at: datetime) -> bool:
        """Past its retention: from ``expires_at`` on, whether or not the sweeper has deleted
        its data yet, so a request never shows up without its products. Only once finished."""
        if self.status == RequestStatus.EXPIRED:
            return True
        return (
            self.status in FINISHED_REQUEST
            and self.expires_at is not None
            and self.expires_at <= at
        )

    @property
    def progress(self) -> int:
        if self.images_total == 0:
            return 100 if self.status == RequestStatus.COMPLETED else 0
        return (self.images_done + self.images_failed) * 100 // self.images_total

    def to_document(self) -> Document:
        return self.model_dump(by_alias=True)


def now() -> datetime:
    return datetime.now(UTC)


class RequestRepository:
    COLLECTION: ClassVar[str] = REQUESTS
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        # Every periodic scan is an equality plus a range on one of these (the embedded server
        # plans nothing else on an index), so it reads its candidates only, however many
        # finished requests there are. The reconciler: unfinished requests by status, idle
        # since; finished ones whose notice is still pending.
        IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)]),
        IndexModel([("notice_pending", ASCENDING), ("updated_at", ASCENDING)]),
        # The retention sweeper: finished requests of one status, by expiry.
        IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)]),
        # An expired request's tombstone (it answers 410) is kept until then.
        expires_index("purge_at"),
        # GET /api/requests: a key's requests, newest first.
        IndexModel([("owner", ASCENDING), ("created_at", DESCENDING)]),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def create(self, record: RequestRecord) -> None:
        await self._collection.insert_one(record.to_document())

    async def get(self, request_id: str, *, owner: str | None = None) -> RequestRecord | None:
        """The request; with ``owner``, only if that owner's (others' requests do not exist)."""
        query: dict[str, Any] = {"_id": request_id}
        if owner is not None:
            query["owner"] = owner
        doc = await self._collection.find_one(query)
        return RequestRecord.model_validate(doc) if doc else None

    async def mark_ingested(self, request_id: str) -> None:
        await self._collection.update_one(
            {"_id": request_id}, {"$set": {"ingested": True, "updated_at": now()}}
        )

    async def start(self, request_id: str) -> bool:
        result = await self._collection.update_one(
            {"_id": request_id, "status": RequestStatus.PENDING},
            {"$set": {"status": RequestStatus.IN_PROGRESS, "updated_at": now()}},
        )
        return result.modified_count == 1

    async def mark_dispatched(self, request_id: str) -> None:
        await self._collection.update_one(
            {"_id": request_id}, {"$set": {"dispatched_at": now(), "updated_at": now()}}
        )

    async def count_product(
        self,
        request_id: str,
        *,
        token: str,
        seq: int,
        images_done: int,
        images_failed: int,
    ) -> bool:
        """Add one finished product to the counters, once: False if it was already added.

        A product's count is keyed by its run (``token``) and its place among that run's counts
        (``seq``, counted in order), and the request keeps the last ``seq`` added per run. So
        the worker and the reconciler completing the same interrupted count make the same
        write, and only the first one lands; the run's entry stays small (one number per run,
        dropped by :meth:`forget_count_run` once its counts are settled).

        Whoever then reads the counters at their total makes the conditional move to
        completed (:meth:`complete_if_counted`), which happens once whoever sees it first.
        """
        return await self.count_products(
            request_id,
            token=token,
            seqs=[seq],
            images_done=images_done,
            images_failed=images_failed,
        )

    async def count_products(
        self,
        request_id: str,
        *,
        token: str,
        seqs: Sequence[int],
        images_done: int,
        images_failed: int,
    ) -> bool:
        """Add a run's counts ``seqs`` (one product each, in order) in one write, once: only if
        none of them is in yet, i.e. the run's key is below the first. False if not added.

        A worker counts what one flush finished this way; the reconciler, completing the counts
        of a run that died after the flush's final moves, counts the same products one at a
        time (:meth:`count_product`). Whichever lands first, the other finds the key at or past
        its own and adds nothing: each product is counted once.
        """
        field = f"{_COUNT_RUNS}.{token}"
        result = await self._collection.update_one(
            {"_id": request_id, field: {"$not": {"$gte": min(seqs)}}},
            {
                "$inc": {
                    "products_done": len(seqs),
                    "images_done": images_done,
                    "images_failed": images_failed,
                },
                "$set": {field: max(seqs), "updated_at": now()},
            },
        )
        return result.modified_count == 1

    async def count_flush(
        self, request_id: str, *, token: str, counts: Mapping[int, tuple[int, int]]
    ) -> int:
        """A worker's flush on the counters: ``counts`` maps each product's ``seq`` (ascending)
        to its (images done, images failed). One keyed write for all of them; if that is
        refused, the reconciler has counted some of them first (a recount after a broker loss
        takes counts over at once, whoever's run they are), always in ``seq`` order, so the
        rest go one at a time under the same key, each only if no one counted it yet. Refusing
        the whole group would lose them. Returns how many products this call added."""
        seqs = list(counts)
        if await self.count_products(
            request_id,
            token=token,
            seqs=seqs,
            images_done=sum(done for done, _ in counts.values()),
            images_failed=sum(failed for _, failed in counts.values()),
        ):
            return len(seqs)
        added = 0
        for seq, (done, failed) in counts.items():
            added += await self.count_product(
                request_id, token=token, seq=seq, images_done=done, images_failed=failed
            )
        return added

    async def forget_count_run(self, request_id: str, token: str) -> None:
        """Drop a run's count key; only once every count it made is settled on its product."""
        await self._collection.update_one(
            {"_id": request_id}, {"$unset": {f"{_COUNT_RUNS}.{token}": ""}}
        )

    async def complete_if_counted(self, request_id: str) -> RequestRecord | None:
        """The one transition to ``completed``: only the caller that wins it gets the record."""
        completed_at = now()
        doc = await self._collection.find_one_and_update(
            {
                "_id": request_id,
                "status": RequestStatus.IN_PROGRESS,
                "$expr": {"$gte": ["$products_done", "$products_total"]},
            },
            {
                "$set": {
                    "status": RequestStatus.COMPLETED,
                    "completed_at": completed_at,
                    "updated_at": completed_at,
                    "notice_pending": True,
                },
                "$inc": {"completions": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return RequestRecord.model_validate(doc) if doc else None

    async def fail(self, request_id: str, reason: str) -> RequestRecord | None:
        failed_at = now()
        doc = await self._collection.find_one_and_update(
            {
                "_id": request_id,
                "status": {"$in": [RequestStatus.PENDING, RequestStatus.IN_PROGRESS]},
            },
            {
                "$set": {
                    "status": RequestStatus.FAILED,
                    "failure_reason": reason,
                    "notice_pending": True,
                    "completed_at": failed_at,
                    "updated_at": failed_at,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return RequestRecord.model_validate(doc) if doc else None

    async def stale_unfinished(
        self, *, idle_for: timedelta, limit: int = 100
    ) -> list[RequestRecord]:
        """Requests not touched for a while that are not finished: candidates for reconciliation."""
        before = now() - idle_for
        stale: list[RequestRecord] = []
        for status in (RequestStatus.PENDING, RequestStatus.IN_PROGRESS):
            # One status at a time: an equality and a range, which the index serves.
            cursor = (
                self._collection.find({"status": status, "updated_at": {"$lt": before}})
                .sort("updated_at", 1)
                .limit(limit)
            )
            stale += [RequestRecord.model_validate(doc) async for doc in cursor]
        return sorted(stale, key=lambda r: r.updated_at)[:limit]

    async def in_progress(self, *, limit: int = 1000) -> list[tuple[str, Priority]]:
        """(id, priority) of the requests being processed: whose products runs may hold."""
        # An equality on the (status, updated_at) index's first field; only the two fields.
        cursor = self._collection.find(
            {"status": RequestStatus.IN_PROGRESS}, {"_id": 1, "priority": 1}
        ).limit(limit)
        return [(str(doc["_id"]), Priority(doc.get("priority", "normal"))) async for doc in cursor]

    async def cancel(self, request_id: str) -> RequestRecord | None:
        """Stop a pending or running request; None if it had already finished."""
        doc = await self._collection.find_one_and_update(
            {
                "_id": request_id,
                "status": {"$in": [RequestStatus.PENDING, RequestStatus.IN_PROGRESS]},
            },
            {"$set": {"status": RequestStatus.CANCELLED, "updated_at": now()}},
            return_document=ReturnDocument.AFTER,
        )
        return RequestRecord.model_validate(doc) if doc else None

    async def reopen(
        self,
        request_id: str,
        *,
        completions: int,
        products_done: int,
        images_done: int,
        images_failed: int,
    ) -> RequestRecord | None:
        """Move a completed request back to ``in_progress`` for a retry, with its counters as its
        products now stand, in one conditional write; None if it is no longer that completion.

        One write, so that no completion check can ever see it in progress with the counters
        of the completion it is leaving (which would complete it again at once).
        """
        doc = await self._collection.find_one_and_update(
            {"_id": request_id, "status": RequestStatus.COMPLETED, "completions": completions},
            {
                "$set": {
                    "status": RequestStatus.IN_PROGRESS,
                    "products_done": products_done,
                    "images_done": images_done,
                    "images_failed": images_failed,
                    "completed_at": None,
                    "updated_at": now(),
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return RequestRecord.model_validate(doc) if doc else None

    async def due_for_expiry(self, *, limit: int = 100) -> list[RequestRecord]:
        """Finished requests past their expiry, oldest expiry first."""
        at = now()
        due: list[RequestRecord] = []
        for status in FINISHED_REQUEST:
            # One status at a time: an equality and a range, which an index can serve.
            cursor = (
                self._collection.find({"status": status, "expires_at": {"$lt": at}})
                .sort("expires_at", 1)
                .limit(limit - len(due))
            )
            due += [RequestRecord.model_validate(doc) async for doc in cursor]
            if len(due) >= limit:
                break
        return due

    async def keep_until(self, request_id: str, until: datetime) -> None:
        """Push the expiry out to ``until`` if it comes sooner (a request finishing late)."""
        await self._collection.update_one(
            {"_id": request_id, "expires_at": {"$lt": until}}, {"$set": {"expires_at": until}}
        )

    async def mark_expired(self, request_id: str, *, purge_at: datetime) -> None:
        """Keep a tombstone (so the API can answer 410) until ``purge_at`` (a TTL index).

        The tombstone keeps nothing a leak could use: no webhook secret, no webhook URL.
        """
        await self._collection.update_one(
            {"_id": request_id},
            {
                "$set": {
                    "status": RequestStatus.EXPIRED,
                    "updated_at": now(),
                    "purge_at": purge_at,
                },
                "$unset": {"webhook_secret": "", "webhook_url": ""},
            },
        )

    async def delete(self, request_id: str, *, owner: str) -> bool:
        """Remove the request's document (its audit trail with it); False if it was not there."""
        result = await self._collection.delete_one({"_id": request_id, "owner": owner})
        return result.deleted_count == 1

    async def clear_notice(self, request_id: str, completions: int) -> None:
        # Conditional on the completion it was for: a newer completion keeps its own flag.
        await self._collection.update_one(
            {"_id": request_id, "completions": completions}, {"$set": {"notice_pending": False}}
        )

    async def unnotified(self, *, idle_for: timedelta, limit: int = 100) -> list[str]:
        # An equality and a range on the (notice_pending, updated_at) index: the few requests
        # whose notice is still pending, never every finished one.
        cursor = self._collection.find(
            {"notice_pending": True, "updated_at": {"$lt": now() - idle_for}}, {"_id": 1}
        ).limit(limit)
        return [str(doc["_id"]) async for doc in cursor]

    async def statuses(self, request_ids: list[str]) -> dict[str, RequestStatus]:
        cursor = self._collection.find({"_id": {"$in": request_ids}}, {"status": 1})
        return {str(doc["_id"]): RequestStatus(doc["status"]) async for doc in cursor}

    async def list_for_owner(
        self, owner: str, *, status: RequestStatus | None, offset: int, limit: int
    ) -> list[RequestRecord]:
        """The owner's requests, newest first (on the (owner, created_at) index)."""
        query: dict[str, Any] = {"owner": owner}
        if status is not None:
            query["status"] = status
        cursor = self._collection.find(query).sort("created_at", -1).skip(offset).limit(limit)
        return [RequestRecord.model_validate(doc) async for doc in cursor]

    async def touch(self, request_id: str) -> None:
        await self._collection.update_one({"_id": request_id}, {"$set": {"updated_at": now()}})
