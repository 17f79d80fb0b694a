"""Typed dependency aliases: route signatures say what they need, the app state provides it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from api.cache import STATUS_CACHE_SECONDS, STATUS_STALE_SECONDS, TTLCache
from api.feeds import EventHub
from core.settings import Settings
from domain.services import Services
from domain.taskqueue import TaskSender
from models.db import Database, Document
from models.idempotency import IdempotencyRepository
from models.products import ProductRepository
from models.requests import RequestRepository
from models.staging import StagedChunkRepository
from models.webhooks import WebhookDeliveryRepository, WebhookSubscriberRepository
from storage import MediaStore


@dataclass
class AppState:
    """Everything the API holds for its lifetime, built once in the lifespan."""

    settings: Settings
    mongo: AsyncMongoClient[Document]
    db: Database
    redis: Redis
    services: Services
    # Live events: this process's one pub/sub connection and its per-request feeds.
    events: EventHub
    # Status answers by (request_id, owner, offset, limit); see api/requests.py.
    status_cache: TTLCache[bytes] = field(
        default_factory=lambda: TTLCache(ttl=STATUS_CACHE_SECONDS, stale_for=STATUS_STALE_SECONDS)
    )
    # The workers that answered the last ping (GET /api/stats): a ping holds a thread for a
    # second, so stats callers share one every few seconds.
    workers_cache: TTLCache[list[str]] = field(default_factory=lambda: TTLCache(ttl=5.0))


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.imgbatch
    return state


StateDep = Annotated[AppState, Depends(app_state)]


def _settings(state: StateDep) -> Settings:
    return state.settings


def _db(state: StateDep) -> Database:
    return state.db


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_db)]


def _requests(db: DatabaseDep) -> RequestRepository:
    return RequestRepository(db)


def _products(db: DatabaseDep) -> ProductRepository:
    return ProductRepository(db)


def _chunks(db: DatabaseDep) -> StagedChunkRepository:
    return StagedChunkRepository(db)


def _idempotency(db: DatabaseDep) -> IdempotencyRepository:
    return IdempotencyRepository(db)


def _subscribers(db: DatabaseDep) -> WebhookSubscriberRepository:
    return WebhookSubscriberRepository(db)


def _deliveries(db: DatabaseDep) -> WebhookDeliveryRepository:
    return WebhookDeliveryRepository(db)


def _services(state: StateDep) -> Services:
    return state.services


def _tasks(state: StateDep) -> TaskSender:
    return state.services.tasks


def _store(state: StateDep) -> MediaStore:
    return state.services.store


RequestsDep = Annotated[RequestRepository, Depends(_requests)]
ProductsDep = Annotated[ProductRepository, Depends(_products)]
ChunksDep = Annotated[StagedChunkRepository, Depends(_chunks)]
IdempotencyDep = Annotated[IdempotencyRepository, Depends(_idempotency)]
ServicesDep = Annotated[Services, Depends(_services)]
TasksDep = Annotated[TaskSender, Depends(_tasks)]
StoreDep = Annotated[MediaStore, Depends(_store)]
SubscribersDep = Annotated[WebhookSubscriberRepository, Depends(_subscribers)]
DeliveriesDep = Annotated[WebhookDeliveryRepository, Depends(_deliveries)]
