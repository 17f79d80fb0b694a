"""MongoDB connection and schema (indexes). The API and each worker process own one client."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from imgbatch.core.settings import Settings

Document = dict[str, Any]
Database = AsyncDatabase[Document]

REQUESTS = "requests"
PRODUCTS = "products"
SHEET_CHUNKS = "sheet_chunks"
API_KEYS = "api_keys"
IDEMPOTENCY_KEYS = "idempotency_keys"
WEBHOOK_SUBSCRIBERS = "webhook_subscribers"
WEBHOOK_EVENTS = "webhook_events"
WEBHOOK_DELIVERIES = "webhook_deliveries"
MEDIA = "media"
TEMP_OBJECTS = "temp_objects"
SLOTS = "slots"
ACTIVITY = "activity"


def client_url(url: str, *, retry_writes: bool = True) -> str:
    """Keep the operator's URL, but default the options our workload depends on.

    - ``retryWrites`` from ``IMGBATCH_MONGODB_RETRY_WRITES`` (on): on a replica set a write cut
      off by a failover is retried once by the driver instead of failing the task. Our writes
      are idempotent or conditional, so a retry never double-counts. The embedded server's URL
      says ``retryWrites=false`` itself: SecantusDB has no sessions to retry in.
    - ``journal=true``: a write is acknowledged once it is in the journal. The counters and the
      completion flip are exact only if an acknowledged write survives a server crash; without
      it the fault test that kills the database loses the last half second of transitions.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("retryWrites", "true" if retry_writes else "false")
    query.setdefault("journal", "true")
    return urlunsplit(parts._replace(query=urlencode(query)))


def mongo_client(settings: Settings, **kwargs: Any) -> AsyncMongoClient[Document]:
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    kwargs.setdefault("tz_aware", True)
    url = client_url(settings.require_mongodb_url(), retry_writes=settings.mongodb_retry_writes)
    return AsyncMongoClient(url, **kwargs)


def database(client: AsyncMongoClient[Document], settings: Settings) -> Database:
    return client[settings.mongodb_database]


async def _drop_index_if_present(db: Database, collection: str, name: str) -> None:
    if name in await db[collection].index_information():
        await db[collection].drop_index(name)


def _expires(field: str) -> IndexModel:
    """A TTL index: the database deletes a document once the date in ``field`` has passed
    (within a minute; documents without it are kept)."""
    return IndexModel([(field, ASCENDING)], expireAfterSeconds=0)


async def ensure_indexes(db: Database) -> None:
    await db[REQUESTS].create_indexes(
        [
            # Every periodic scan is an equality plus a range on one of these (the embedded
            # server plans nothing else on an index), so it reads its candidates only, however
            # many finished requests there are. The reconciler: unfinished requests by status,
            # idle since; finished ones whose notice is still pending.
            IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)]),
            IndexModel([("notice_pending", ASCENDING), ("updated_at", ASCENDING)]),
            # The retention sweeper: finished requests of one status, by expiry.
            IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)]),
            # An expired request's tombstone (it answers 410) is kept until then.
            _expires("purge_at"),
            # GET /api/requests: a key's requests, newest first.
            IndexModel([("owner", ASCENDING), ("created_at", DESCENDING)]),
            # An owner's requests by status, oldest first (GET /api/stats).
            IndexModel([("owner", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING)]),
        ]
    )
    # Products had a TTL index of their own; it could delete them up to a sweep before their
    # request was marked expired (a completed request with no products). They now go with
    # their request, by the retention sweeper only.
    await _drop_index_if_present(db, PRODUCTS, "expires_at_1")
    await db[PRODUCTS].create_indexes(
        [
            IndexModel([("request_id", ASCENDING), ("serial_number", ASCENDING)], unique=True),
            # The product transitions filter on exactly these, or a prefix (see
            # ProductRepository): reclaiming an expired lease is a range on the last one.
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
    )
    await db[SLOTS].create_indexes(
        [
            IndexModel([("kind", ASCENDING), ("owner", ASCENDING)]),
            IndexModel([("holder", ASCENDING)]),
        ]
    )
    await db[ACTIVITY].create_indexes(
        [
            IndexModel([("owner", ASCENDING), ("minute", ASCENDING)]),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
        ]
    )
    await db[API_KEYS].create_indexes([IndexModel([("key_hash", ASCENDING)], unique=True)])
    await db[IDEMPOTENCY_KEYS].create_indexes([_expires("expires_at")])
    await db[SHEET_CHUNKS].create_indexes(
        [
            IndexModel([("request_id", ASCENDING), ("seq", ASCENDING)], unique=True),
            # The reconciler's sweep of abandoned uploads.
            IndexModel([("staged_at", ASCENDING)]),
        ]
    )
    await db[WEBHOOK_SUBSCRIBERS].create_indexes(
        [IndexModel([("owner", ASCENDING), ("created_at", ASCENDING)])]
    )
    # The unique indexes are what make "one event per request" and "one delivery per target" hold
    # when the notice task runs twice.
    # Events and their delivery log are kept for WEBHOOK_LOG_TTL_DAYS.
    await db[WEBHOOK_EVENTS].create_indexes(
        [IndexModel([("dedupe_key", ASCENDING)], unique=True), _expires("expires_at")]
    )
    # The temp-original sweeper reads only the entries past their earliest deletion time.
    await db[TEMP_OBJECTS].create_indexes([IndexModel([("not_before", ASCENDING)])])
    await db[MEDIA].create_indexes(
        [
            # Which media objects a request holds: retention releases them by this (multikey).
            IndexModel([("holders", ASCENDING)]),
            # Which ones a source URL gave: a re-import revalidates those URLs.
            IndexModel([("source_keys", ASCENDING)]),
        ]
    )
    await db[WEBHOOK_DELIVERIES].create_indexes(
        [
            IndexModel([("event_id", ASCENDING), ("target", ASCENDING)], unique=True),
            IndexModel([("state", ASCENDING), ("next_attempt_at", ASCENDING)]),
            IndexModel([("subscriber_id", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("request_id", ASCENDING), ("target", ASCENDING)]),
            _expires("expires_at"),
        ]
    )
