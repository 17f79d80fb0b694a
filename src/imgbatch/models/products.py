"""Products: one document per sheet row, carrying its inputs, outputs and per-image errors.

A product moves ``pending -> processing -> completed | partial | failed``. The move to a final
state is conditional on the product still being ``processing``, so exactly one task run makes it
and only that run adds the product to its request's counters.

Counting a product takes two writes (this document, then the request's counters), so each final
product says how far its count got (:class:`CountState`) and carries the key its count is made
under (``count_token``, ``count_seq``): whoever completes an interrupted count, the worker or the
reconciler, makes the same idempotent write (see ``RequestRepository.count_product``).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError

from imgbatch.models.db import PRODUCTS, Database, Document
from imgbatch.models.media import Rendered

_DUPLICATE_KEY = 11000


class ProductStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"  # every image processed
    PARTIAL = "partial"  # some images failed
    FAILED = "failed"  # every image failed

    @property
    def is_final(self) -> bool:
        return self not in (ProductStatus.PENDING, ProductStatus.PROCESSING)


UNFINISHED = [ProductStatus.PENDING, ProductStatus.PROCESSING]


class CountState(StrEnum):
    """How far a final product's count on its request has got."""

    PENDING = "pending"  # final; its run has still to add it to the request's counters
    REPAIRING = "repairing"  # the reconciler took the count over (its run died or stalled)
    DONE = "done"  # it is in the counters


COUNT_UNSETTLED = [CountState.PENDING, CountState.REPAIRING]


class ImageError(BaseModel):
    index: int
    url: str
    code: str
    message: str
    # Attempts made at it before it failed (downloads retried, or runs its worker died in).
    attempts: int = 1


class ImageWarning(BaseModel):
    """A catalogue-quality finding (imaging.quality): never a failure."""

    code: str
    message: str


class ImageOutcome(BaseModel):
    """How one input image of a product was done: its outputs and where they came from."""

    media_id: str  # the media object held for these outputs (models.media)
    rendered: Rendered
    # None: rendered for this image; "duplicate": the same bytes were done before (same owner
    # and profile); "not_modified": the origin answered 304 to a conditional request.
    reused: str | None = None
    processing_ms: int = 0
    # Against the request's profile thresholds, when the image was done.
    warnings: list[ImageWarning] = []


@dataclass(frozen=True)
class Finished:
    """A product's final outcome, as a run hands it to :meth:`ProductRepository.finish_many`."""

    serial_number: int
    output_keys: list[str | None]
    errors: list[ImageError]
    images: list[ImageOutcome | None]


# A released lease: already expired, so the next claim takes the product (its holder is gone).
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


class LeaseHolder(BaseModel):
    """The process a lease was claimed by: where it runs and which process it is, so that its
    death on this host is seen at once instead of when its lease runs out."""

    model_config = ConfigDict(frozen=True)

    # The host and its process namespace: pids mean something only inside one of them.
    host: str
    pid: int
    # When that process started: a pid reused by another process does not pass for it.
    started: float


class ProductRecord(BaseModel):
    request_id: str
    serial_number: int
    position: int
    line: int
    product_name: str
    input_image_urls: list[str]
    extra: dict[str, str] = {}
    # A Shopify upload's rows of this product, every cell as read (sheets.shopify): the
    # Shopify result file writes them back. Only stored when there are some.
    source_rows: list[list[str]] | None = None
    status: ProductStatus = ProductStatus.PENDING
    # Storage keys, aligned with input_image_urls; None where the image failed.
    output_keys: list[str | None] = []
    errors: list[ImageError] = []
    # Per-image records, aligned with input_image_urls; None where the image failed.
    images: list[ImageOutcome | None] = []
    # Runs that claimed it: the first claim of a pending product, then one per reclaim of an
    # expired lease (a run that died, or stalled past its lease).
    attempts: int = 0
    # While processing: the run holding it (its claim token) and until when; the run renews
    # the lease while it works, and only an expired lease may be reclaimed.
    claim: str | None = None
    lease_until: datetime | None = None
    holder: LeaseHolder | None = None
    # The claim whose product the reconciler sent to the queue again (once per claim).
    requeued: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Set with the move to a final state: the run that made it, and the order of that count
    # among the run's counts (see CountState).
    count_state: CountState | None = None
    count_token: str | None = None
    count_seq: int = 0

    def output_key(self, index: int) -> str | None:
        """The stored output of image ``index`` from an earlier run, if it has one."""
        return self.output_keys[index] if index < len(self.output_keys) else None

    def image(self, index: int) -> ImageOutcome | None:
        """The record of image ``index`` from an earlier run, if it has one."""
        return self.images[index] if index < len(self.images) else None

    @property
    def images_failed(self) -> int:
        return len(self.errors)

    @property
    def images_done(self) -> int:
        return len(self.input_image_urls) - len(self.errors)

    @property
    def images_final(self) -> int:
        """Images that reached a final state (all of them, once the product is final)."""
        return len(self.input_image_urls) if self.status.is_final else 0

    def to_document(self) -> Document:
        return self.model_dump(mode="python")


def outcome_status(images: int, failed: int) -> ProductStatus:
    if failed == 0:
        return ProductStatus.COMPLETED
    return ProductStatus.FAILED if failed >= images else ProductStatus.PARTIAL


class ProductRepository:
    COLLECTION: ClassVar[str] = PRODUCTS
    INDEXES: ClassVar[Sequence[IndexModel]] = [
        IndexModel([("request_id", ASCENDING), ("serial_number", ASCENDING)], unique=True),
        # The product transitions filter on exactly these, or a prefix: reclaiming an expired
        # lease is a range on the last one.
        IndexModel(
            [
                ("request_id", ASCENDING),
                ("serial_number", ASCENDING),
                ("status", ASCENDING),
                ("lease_until", ASCENDING),
            ]
        ),
        IndexModel([("request_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("request_id", ASCENDING), ("position", ASCENDING)]),
        # Unsettled counts of a request, and a run settling its own (see CountState).
        IndexModel(
            [
                ("request_id", ASCENDING),
                ("count_state", ASCENDING),
                ("serial_number", ASCENDING),
            ]
        ),
        # A resumed event stream replays the products finished since its last event.
        IndexModel([("request_id", ASCENDING), ("finished_at", ASCENDING)]),
    ]

    def __init__(self, db: Database) -> None:
        self._collection = db[self.COLLECTION]

    async def insert_many(self, products: Iterable[ProductRecord]) -> int:
        """Insert, ignoring products that already exist, so re-running an ingest is harmless."""
        docs = [product.to_document() for product in products]
        if not docs:
            return 0
        try:
            result = await self._collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details["writeErrors"] if e["code"] != _DUPLICATE_KEY]
            if others:
                raise
            return int(exc.details["nInserted"])
        return len(result.inserted_ids)

    async def get(self, request_id: str, serial_number: int) -> ProductRecord | None:
        doc = await self._collection.find_one(
            {"request_id": request_id, "serial_number": serial_number}
        )
        return ProductRecord.model_validate(doc) if doc else None

    async def page(self, request_id: str, *, offset: int, limit: int) -> list[ProductRecord]:
        # Positions are dense (0..n-1), so a page is a range on the (request_id, position) index:
        # 3 ms where skip() made the server walk and sort the whole request (90 ms at 5k rows).
        cursor = self._collection.find(
            {"request_id": request_id, "position": {"$gte": offset, "$lt": offset + limit}}
        ).sort("position", 1)
        return [ProductRecord.model_validate(doc) async for doc in cursor]

    async def iterate(
        self, request_id: str, *, batch_size: int = 1000
    ) -> AsyncIterator[ProductRecord]:
        """Every product of the request, in input order, ``batch_size`` at a time.

        Page by page over the dense positions, as ``page``: one query over the whole request
        made the embedded server decode and sort all of its products (comparing them in
        Python, n log n) and hold them in one cursor; a page at a time, its work and memory per
        row stay the same however large the request.
        """
        offset = 0
        while True:
            page = await self.page(request_id, offset=offset, limit=batch_size)
            for product in page:
                yield product
            if len(page) < batch_size:
                return
            offset += batch_size

    async def finished_since(
        self, request_id: str, since: datetime, *, limit: int
    ) -> list[ProductRecord]:
        """Products that reached a final state at or after ``since``: what a resumed event
        stream replays (on the (request_id, finished_at) index)."""
        cursor = (
            self._collection.find({"request_id": request_id, "finished_at": {"$gte": since}})
            .sort("finished_at", 1)
            .limit(limit)
        )
        products = [ProductRecord.model_validate(doc) async for doc in cursor]
        # A product reopened by a retry keeps its old finished_at until it finishes again.
        return [product for product in products if product.status.is_final]

    # The MongoDB-protocol server we embed plans a query on an index only when its predicates
    # are equalities on that index's fields, and its find_one_and_update costs 20x an
    # update_one (measured: 44 ms vs 0.4 ms per claim on 3000 products). So the hot paths
    # below use equality filters that match an index exactly, conditional update_one for the
    # transitions, and a separate read where the document is needed. On MongoDB proper this
    # costs one extra round trip and nothing else.

    async def claimable_serials(self, request_id: str) -> AsyncIterator[int]:
        """Serial numbers of the products a run may claim now, in input order: the pending ones,
        and those whose run's lease has expired (never one that a live run holds)."""
        at = datetime.now(UTC)
        streams = [
            self._positions(request_id, ProductStatus.PENDING),
            self._positions(request_id, ProductStatus.PROCESSING, expired_at=at),
        ]
        async for _, serial_number in _merge_sorted(streams):
            yield serial_number

    async def _positions(
        self, request_id: str, status: ProductStatus, *, expired_at: datetime | None = None
    ) -> AsyncIterator[tuple[int, int]]:
        """(position, serial) of the request's products in ``status``, in order; with
        ``expired_at``, only those whose lease had run out by then (processing products are
        few, so the lease is checked here rather than planned on an index)."""
        cursor = self._collection.find(
            {"request_id": request_id, "status": status},
            {"serial_number": 1, "position": 1, "lease_until": 1, "_id": 0},
            batch_size=1000,
        ).sort("position", 1)
        async for doc in cursor:
            lease_until = doc.get("lease_until")
            if expired_at is None or lease_until is None or lease_until < expired_at:
                yield int(doc["position"]), int(doc["serial_number"])

    async def any_processing(self, request_id: str, serial_numbers: list[int]) -> bool:
        """Whether one of these products is ``processing``: a run that claimed it died, or is
        still at work on it."""
        wanted = set(serial_numbers)
        cursor = self._collection.find(
            {"request_id": request_id, "status": ProductStatus.PROCESSING},
            {"serial_number": 1, "_id": 0},
        )
        return any([int(doc["serial_number"]) in wanted async for doc in cursor])

    async def claim(
        self,
        request_id: str,
        serial_number: int,
        *,
        token: str,
        lease: timedelta,
        holder: LeaseHolder | None = None,
    ) -> ProductRecord | None:
        """Take a product that is pending, or whose run's lease has expired; None if it is final
        or a live run holds it. Either way the claim counts one attempt."""
        at = datetime.now(UTC)
        exact = {"request_id": request_id, "serial_number": serial_number}
        for condition in (
            {"status": ProductStatus.PENDING},
            {"status": ProductStatus.PROCESSING, "lease_until": {"$lt": at}},
            # Claimed before leases existed: nobody renews it.
            {"status": ProductStatus.PROCESSING, "lease_until": None},
        ):
            result = await self._collection.update_one(
                {**exact, **condition}, _claim_update(token, at, lease, holder)
            )
            if result.modified_count:
                return await self.get(request_id, serial_number)
        return None

    async def claim_many(
        self,
        request_id: str,
        serial_numbers: Sequence[int],
        *,
        token: str,
        lease: timedelta,
        holder: LeaseHolder | None = None,
    ) -> list[ProductRecord]:
        """Claim a chunk's pending products in one round trip; returns the ones this call got.

        Only ``pending`` products are taken. Each claim stamps the run's token, so a duplicate
        run of the same chunk racing this one takes only what it moved itself, and each run that
        processes a product has counted an attempt. A product left ``processing`` by a run that
        died is taken over by :meth:`claim`, alone, once its run is over. Two round trips for
        the chunk instead of two per product; each update is still a conditional one on an
        exact index.
        """
        if not serial_numbers:
            return []
        update = _claim_update(token, datetime.now(UTC), lease, holder)
        await self._collection.bulk_write(
            [
                UpdateOne(
                    {
                        "request_id": request_id,
                        "serial_number": serial_number,
                        "status": ProductStatus.PENDING,
                    },
                    update,
                )
                for serial_number in serial_numbers
            ],
            ordered=False,
        )
        # $in on the last field of the unique index is planned as a few point lookups.
        cursor = self._collection.find(
            {"request_id": request_id, "serial_number": {"$in": list(serial_numbers)}}
        )
        claimed = {
            int(doc["serial_number"]): ProductRecord.model_validate(doc)
            async for doc in cursor
            if doc["status"] == ProductStatus.PROCESSING and doc.get("claim") == token
        }
        return [claimed[s] for s in serial_numbers if s in claimed]

    async def renew_leases(
        self, request_id: str, serial_numbers: Iterable[int], *, lease: timedelta
    ) -> None:
        """Extend the leases of products a live run is still processing, in one bulk write.

        Not conditional on the run's token: if a stall let another run take one over, both are
        at work on it, and either finishing it is as good.
        """
        until = datetime.now(UTC) + lease
        updates = [
            UpdateOne(
                {
                    "request_id": request_id,
                    "serial_number": serial_number,
                    "status": ProductStatus.PROCESSING,
                },
                {"$set": {"lease_until": until}},
            )
            for serial_number in serial_numbers
        ]
        if updates:
            await self._collection.bulk_write(updates, ordered=False)

    async def processing(self, request_id: str) -> list[ProductRecord]:
        """The request's products some run holds now (few: at most what the workers hold)."""
        cursor = self._collection.find(
            {"request_id": request_id, "status": ProductStatus.PROCESSING}
        )
        return [ProductRecord.model_validate(doc) async for doc in cursor]

    async def release(
        self, request_id: str, serial_number: int, claim: str, *, requeued: bool = False
    ) -> bool:
        """End the lease of ``claim`` (its holder is gone), so the next claim takes the product;
        with ``requeued``, also note that it was sent to the queue again for that claim. False
        if the product moved on or another run claimed it meanwhile."""
        update: dict[str, Any] = {"lease_until": RELEASED}
        if requeued:
            update["requeued"] = claim
        result = await self._collection.update_one(
            {
                "request_id": request_id,
                "serial_number": serial_number,
                "status": ProductStatus.PROCESSING,
                "claim": claim,
            },
            {"$set": update},
        )
        return result.modified_count == 1

    async def finish(
        self,
        request_id: str,
        serial_number: int,
        *,
        output_keys: Sequence[str | None],
        errors: Sequence[ImageError],
        count_token: str,
        count_seq: int,
        images: Sequence[ImageOutcome | None] = (),
    ) -> ProductStatus | None:
        """The product's one transition to a final state; None if another run already made it.

        The caller must then count it on its request under ``(count_token, count_seq)``.
        """
        finished = Finished(serial_number, list(output_keys), list(errors), list(images))
        done = await self.finish_many(request_id, [finished], count_token, count_seq)
        return done.get(serial_number)

    async def finish_many(
        self, request_id: str, products: Sequence[Finished], count_token: str, first_seq: int
    ) -> dict[int, ProductStatus]:
        """:meth:`finish` for several products of one run, in one bulk write: the ``i``-th is
        counted under ``first_seq + i``. Returns the serials this call moved, with their status
        (a product another run already finished is left out)."""
        if not products:
            return {}
        at = datetime.now(UTC)
        moves = {
            p.serial_number: (outcome_status(len(p.output_keys), len(p.errors)), first_seq + i)
            for i, p in enumerate(products)
        }
        result = await self._collection.bulk_write(
            [
                UpdateOne(
                    {
                        "request_id": request_id,
                        "serial_number": p.serial_number,
                        "status": ProductStatus.PROCESSING,
                    },
                    {
                        "$set": {
                            "status": moves[p.serial_number][0],
                            "output_keys": p.output_keys,
                            "errors": [error.model_dump() for error in p.errors],
                            "images": [image.model_dump() if image else None for image in p.images],
                            "finished_at": at,
                            "count_state": CountState.PENDING,
                            "count_token": count_token,
                            "count_seq": moves[p.serial_number][1],
                        }
                    },
                )
                for p in products
            ],
            ordered=False,
        )
        if result.modified_count == len(products):
            return {serial: status for serial, (status, _) in moves.items()}
        # Some were finished by another run first: the ones carrying this run's key are ours.
        cursor = self._collection.find(
            {"request_id": request_id, "serial_number": {"$in": list(moves)}},
            {"serial_number": 1, "count_token": 1, "count_seq": 1, "_id": 0},
        )
        return {
            int(doc["serial_number"]): moves[int(doc["serial_number"])][0]
            async for doc in cursor
            if doc.get("count_token") == count_token
            and doc.get("count_seq") == moves[int(doc["serial_number"])][1]
        }

    async def mark_counted(self, request_id: str, serial_numbers: Sequence[int]) -> int:
        """Settle the counts a run made itself; returns how many were still its to settle.

        Fewer than asked means the reconciler took some over meanwhile (its count is the same
        idempotent write, so nothing is counted twice, but it still needs the run's key).
        """
        if not serial_numbers:
            return 0
        result = await self._collection.update_many(
            {
                "request_id": request_id,
                "count_state": CountState.PENDING,
                "serial_number": {"$in": list(serial_numbers)},
            },
            {"$set": {"count_state": CountState.DONE}},
        )
        return int(result.modified_count)

    async def unsettled_counts(self, request_id: str) -> list[ProductRecord]:
        """Final products whose count may not have reached the request, in count order."""
        cursor = self._collection.find(
            {"request_id": request_id, "count_state": {"$in": COUNT_UNSETTLED}}
        )
        products = [ProductRecord.model_validate(doc) async for doc in cursor]
        return sorted(products, key=lambda p: (p.count_token or "", p.count_seq))

    async def take_over_count(self, product: ProductRecord) -> bool:
        """The reconciler takes an unsettled count over; False if its run settled it first."""
        result = await self._collection.update_one(
            {
                "request_id": product.request_id,
                "serial_number": product.serial_number,
                "count_state": {"$in": COUNT_UNSETTLED},
            },
            {"$set": {"count_state": CountState.REPAIRING}},
        )
        return result.modified_count == 1

    async def settle_count(self, request_id: str, serial_number: int) -> None:
        await self._collection.update_one(
            {
                "request_id": request_id,
                "serial_number": serial_number,
                "count_state": CountState.REPAIRING,
            },
            {"$set": {"count_state": CountState.DONE}},
        )

    async def reopen_failed(self, request_id: str) -> int:
        """Send products with failed images back to ``pending`` for a retry.

        Their stored outputs stay: a retry runs only the images that have no output.
        """
        result = await self._collection.update_many(
            {
                "request_id": request_id,
                "status": {"$in": [ProductStatus.PARTIAL, ProductStatus.FAILED]},
            },
            {
                "$set": {"status": ProductStatus.PENDING, "errors": [], "attempts": 0},
                "$unset": {"count_state": "", "count_token": "", "count_seq": ""},
            },
        )
        return int(result.modified_count)

    async def delete_for_request(self, request_id: str) -> int:
        result = await self._collection.delete_many({"request_id": request_id})
        return int(result.deleted_count)

    async def tally(self, request_id: str) -> dict[str, int]:
        """Recount a request's progress from its products (the source of truth)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"request_id": request_id}},
            {
                "$group": {
                    "_id": None,
                    "products": {"$sum": 1},
                    "products_done": {"$sum": {"$cond": [{"$in": ["$status", UNFINISHED]}, 0, 1]}},
                    "images_failed": {
                        "$sum": {
                            "$cond": [
                                {"$in": ["$status", UNFINISHED]},
                                0,
                                {"$size": {"$ifNull": ["$errors", []]}},
                            ]
                        }
                    },
                    "images_final": {
                        "$sum": {
                            "$cond": [
                                {"$in": ["$status", UNFINISHED]},
                                0,
                                {"$size": "$input_image_urls"},
                            ]
                        }
                    },
                }
            },
        ]
        cursor = await self._collection.aggregate(pipeline)
        rows = await cursor.to_list()
        if not rows:
            return {"products": 0, "products_done": 0, "images_done": 0, "images_failed": 0}
        row = rows[0]
        return {
            "products": row["products"],
            "products_done": row["products_done"],
            "images_done": row["images_final"] - row["images_failed"],
            "images_failed": row["images_failed"],
        }


def _claim_update(
    token: str, at: datetime, lease: timedelta, holder: LeaseHolder | None
) -> Document:
    return {
        "$set": {
            "status": ProductStatus.PROCESSING,
            "started_at": at,
            "claim": token,
            "lease_until": at + lease,
            "holder": holder.model_dump() if holder else None,
        },
        "$inc": {"attempts": 1},
    }


async def _merge_sorted(
    streams: list[AsyncIterator[tuple[int, int]]],
) -> AsyncIterator[tuple[int, int]]:
    """Merge async streams that are each sorted, keeping the order (a small k-way merge)."""
    heads: list[tuple[tuple[int, int], int]] = []
    for index, stream in enumerate(streams):
        first = await anext(stream, None)
        if first is not None:
            heapq.heappush(heads, (first, index))
    while heads:
        item, index = heapq.heappop(heads)
        yield item
        following = await anext(streams[index], None)
        if following is not None:
            heapq.heappush(heads, (following, index))
