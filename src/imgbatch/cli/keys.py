"""API key administration behind ``imgbatch keys``: create (shown once), list, revoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from imgbatch.core.settings import Settings
from imgbatch.domain.events import RedisEventPublisher, key_revoked
from imgbatch.models.db import Database, database, mongo_client
from imgbatch.models.keys import ApiKeyRecord, ApiKeyRepository
from imgbatch.models.migrations import migrate
from imgbatch.models.repositories import Repositories

T = TypeVar("T")


async def _with_keys(settings: Settings, action: Callable[[ApiKeyRepository], Awaitable[T]]) -> T:
    client = mongo_client(settings)
    try:
        db: Database = database(client, settings)
        await migrate(db)
        return await action(Repositories(db).api_keys)
    finally:
        await client.close()


async def create_key(settings: Settings, name: str) -> tuple[ApiKeyRecord, str]:
    return await _with_keys(settings, lambda keys: keys.create(name))


async def list_keys(settings: Settings) -> list[ApiKeyRecord]:
    return await _with_keys(settings, lambda keys: keys.list())


async def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke in MongoDB, then tell every API process to forget the keys it remembers. The
    notice only makes it sooner: without it the key is refused within key_cache_seconds."""
    revoked = await _with_keys(settings, lambda keys: keys.revoke(key_id))
    if revoked and settings.redis_url:
        redis = Redis.from_url(settings.redis_url)
        try:
            await key_revoked(RedisEventPublisher(redis), key_id)
        finally:
            await redis.aclose()
    return revoked
