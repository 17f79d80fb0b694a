"""The database's schema: each repository's declared indexes, and numbered migrations.

:func:`migrate` runs where a process first opens the database for writing (the API's start-up,
``imgbatch keys``). It applies, in order, every migration not yet recorded in the
``migrations`` collection, then creates every repository's declared indexes. Creating an index
that exists is a no-op, so a repository that declares a new index gets it at the next start
without a migration. Migrations are for what a declaration cannot say: dropping an index,
rewriting documents.

Two processes starting together may both run a migration before either records it, so each
must be idempotent (drop only if present, update conditionally). Numbers are never reused or
reordered; a new migration goes at the end with the next number.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from pymongo import IndexModel

from imgbatch.core.logs import log_event
from imgbatch.models.activity import ActivityRepository, RequestStatsRepository
from imgbatch.models.audit import AuditRepository
from imgbatch.models.db import MIGRATIONS, PRODUCTS, Database
from imgbatch.models.idempotency import IdempotencyRepository
from imgbatch.models.keys import ApiKeyRepository
from imgbatch.models.media import MediaRepository
from imgbatch.models.products import ProductRepository
from imgbatch.models.requests import RequestRepository, now
from imgbatch.models.slots import SlotRepository
from imgbatch.models.staging import StagedChunkRepository
from imgbatch.models.temp import TempObjectRepository
from imgbatch.models.webhooks import (
    WebhookDeliveryRepository,
    WebhookEventRepository,
    WebhookSubscriberRepository,
)

logger = logging.getLogger(__name__)


class Indexed(Protocol):
    COLLECTION: ClassVar[str]
    INDEXES: ClassVar[Sequence[IndexModel]]


# Every repository: the schema is the union of what they declare.
REPOSITORIES: tuple[type[Indexed], ...] = (
    RequestRepository,
    RequestStatsRepository,
    AuditRepository,
    ProductRepository,
    StagedChunkRepository,
    SlotRepository,
    ActivityRepository,
    ApiKeyRepository,
    IdempotencyRepository,
    WebhookSubscriberRepository,
    WebhookEventRepository,
    WebhookDeliveryRepository,
    TempObjectRepository,
    MediaRepository,
)


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    apply: Callable[[Database], Awaitable[None]]


async def _drop_products_ttl(db: Database) -> None:
    """Products had a TTL index of their own; it could delete them up to a sweep before their
    request was marked expired (a completed request with no products). They now go with their
    request, by the retention sweeper only."""
    if "expires_at_1" in await db[PRODUCTS].index_information():
        await db[PRODUCTS].drop_index("expires_at_1")


MIGRATIONS_IN_ORDER: tuple[Migration, ...] = (
    Migration(1, "drop the products' own TTL index", _drop_products_ttl),
)


async def migrate(db: Database) -> None:
    """Bring the database to the current schema: pending migrations, then declared indexes."""
    done = {doc["_id"] async for doc in db[MIGRATIONS].find({}, {"_id": 1})}
    for migration in MIGRATIONS_IN_ORDER:
        if migration.number in done:
            continue
        await migration.apply(db)
        await db[MIGRATIONS].update_one(
            {"_id": migration.number},
            {"$setOnInsert": {"name": migration.name, "applied_at": now()}},
            upsert=True,
        )
        log_event(logger, "db.migrated", number=migration.number, name=migration.name)
    for repository in REPOSITORIES:
        if repository.INDEXES:
            await db[repository.COLLECTION].create_indexes(list(repository.INDEXES))
