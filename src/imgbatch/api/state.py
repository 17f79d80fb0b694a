"""What the API holds for its lifetime (:class:`AppState`), and the dependency that hands it
to a route. Kept apart from ``api.deps`` so that ``api.auth`` can use it while ``api.deps``
builds on ``api.auth``'s owner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from imgbatch.api.cache import STATUS_CACHE_BYTES, STATUS_STALE_SECONDS, TTLCache
from imgbatch.api.feeds import EventHub
from imgbatch.api.streams import StreamLimits
from imgbatch.api.tokens import TokenVerifier
from imgbatch.core.settings import Settings
from imgbatch.domain.events import KEY_REVOKED, REQUEST_CHANGED
from imgbatch.domain.services import Services
from imgbatch.imaging.profiles import Profile
from imgbatch.models.db import Database, Document


@dataclass
class AppState:
    """Everything the API holds for its lifetime, built once in the lifespan."""

    settings: Settings
    mongo: AsyncMongoClient[Document]
    db: Database
    redis: Redis
    services: Services
    # The built-in and operator profiles, validated when the app was created.
    profiles: dict[str, Profile]
    # Live events: this process's one pub/sub connection and its per-request feeds.
    events: EventHub
    # Status answers by (request_id, owner, offset, limit); see api/requests.py.
    status_cache: TTLCache[bytes] = field(init=False)
    # The owner of each API key hash, or None for a hash no active key has; see api/auth.py.
    # Never served stale: a revoked key must be refused within key_cache_seconds.
    key_cache: TTLCache[str | None] = field(init=False)
    # The workers that answered the last ping (GET /api/stats): a ping holds a thread for a
    # second, so stats callers share one every few seconds.
    workers_cache: TTLCache[list[str]] = field(default_factory=lambda: TTLCache(ttl=5.0))
    # JWT bearer tokens, if IMGBATCH_JWT_SECRET or IMGBATCH_JWT_PUBLIC_KEY is set (api/tokens.py).
    tokens: TokenVerifier | None = field(init=False)
    # The event streams this process serves, by owner; see api/streams.py.
    streams: StreamLimits = field(init=False)

    def __post_init__(self) -> None:
        self.status_cache = TTLCache(
            ttl=self.settings.status_cache_seconds,
            stale_for=STATUS_STALE_SECONDS,
            weigh=len,
            max_weight=STATUS_CACHE_BYTES,
        )
        # Read again in the background once half its time is gone (see TTLCache).
        ttl = self.settings.key_cache_seconds
        self.key_cache = TTLCache(ttl=ttl, refresh_ahead=ttl / 2)
        self.tokens = TokenVerifier.from_settings(self.settings)
        self.streams = StreamLimits(self.settings)

    def forget(self, change: dict[str, Any]) -> None:
        """Apply a notice from CHANGES_CHANNEL (domain.events), from this process or another.

        If the subscription is down, notices are lost and nothing here runs: the caches' own
        expiry (status_cache_seconds, key_cache_seconds) still bounds how stale they get.
        """
        kind = change.get("kind")
        if kind == REQUEST_CHANGED:
            self.status_cache.discard(str(change.get("request_id")))
        elif kind == KEY_REVOKED:
            # Revocations are rare: forgetting every key costs one read per key in use, once.
            self.key_cache.clear()


# Every provider here is `async def` though none awaits: FastAPI runs a plain `def` dependency
# in its thread pool, and the status endpoint's six were six thread hops per poll (bench/).
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.imgbatch
    return state


StateDep = Annotated[AppState, Depends(app_state)]
