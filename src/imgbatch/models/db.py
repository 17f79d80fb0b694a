"""MongoDB connection and collection names. The API and each worker process own one client.

Each repository declares its collection's indexes; ``models.migrations`` applies them."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
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
MIGRATIONS = "migrations"


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


def expires_index(field: str) -> IndexModel:
    """A TTL index: the database deletes a document once the date in ``field`` has passed
    (within a minute; documents without it are kept)."""
    return IndexModel([(field, ASCENDING)], expireAfterSeconds=0)
