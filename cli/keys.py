"""API key administration behind ``imgbatch keys``: create (shown once), list, revoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.settings import Settings
from models.db import Database, database, ensure_indexes, mongo_client
from models.keys import ApiKeyRecord, ApiKeyRepository

T = TypeVar("T")


async def _with_keys(settings: Settings, action: Callable[[ApiKeyRepository], Awaitable[T]]) -> T:
    client = mongo_client(settings)
    try:
        db: Database = database(client, settings)
        await ensure_indexes(db)
        return await action(ApiKeyRepository(db))
    finally:
        await client.close()


async def create_key(settings: Settings, name: str) -> tuple[ApiKeyRecord, str]:
    return await _with_keys(settings, lambda keys: keys.create(name))


async def list_keys(settings: Settings) -> list[ApiKeyRecord]:
    return await _with_keys(settings, lambda keys: keys.list())


async def revoke_key(settings: Settings, key_id: str) -> bool:
    return await _with_keys(settings, lambda keys: keys.revoke(key_id))
