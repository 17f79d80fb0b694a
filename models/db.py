"""MongoDB connection and schema (indexes). The API and each worker process own one client."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from models.settings import Settings

Document = dict[str, Any]
Database = AsyncDatabase[Document]

REQUESTS = "requests"
PRODUCTS = "products"
SHEET_CHUNKS = "sheet_chunks"


def client_url(url: str) -> str:
    """Keep the operator's URL, but default the options our workload depends on.

    Every write we make is already idempotent or conditional, so driver-level retryable writes
    buy nothing and cost a lot on MongoDB-protocol servers without sessions.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("retryWrites", "false")
    return urlunsplit(parts._replace(query=urlencode(query)))


def mongo_client(settings: Settings, **kwargs: Any) -> AsyncMongoClient[Document]:
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    kwargs.setdefault("tz_aware", True)
    return AsyncMongoClient(client_url(settings.require_mongodb_url()), **kwargs)


def database(client: AsyncMongoClient[Document], settings: Settings) -> Database:
    return client[settings.mongodb_database]


async def ensure_indexes(db: Database) -> None:
    await db[REQUESTS].create_indexes(
        [IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)])]
    )
    await db[PRODUCTS].create_indexes(
        [
            IndexModel([("request_id", ASCENDING), ("serial_number", ASCENDING)], unique=True),
            IndexModel([("request_id", ASCENDING), ("status", ASCENDING)]),
            IndexModel([("request_id", ASCENDING), ("position", ASCENDING)]),
        ]
    )
    await db[SHEET_CHUNKS].create_indexes(
        [IndexModel([("request_id", ASCENDING), ("seq", ASCENDING)], unique=True)]
    )
