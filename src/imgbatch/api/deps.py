"""Typed dependency aliases: route signatures say what they need, the app state provides it.

Repositories come from the app's :class:`Services` (``models.repositories``), the one way any
code reaches them; a route never builds one from a database handle.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from imgbatch.api.auth import OwnerDep
from imgbatch.api.state import AppState as AppState
from imgbatch.api.state import StateDep as StateDep
from imgbatch.core.errors import Gone, NotFound, UnprocessableEntity
from imgbatch.core.settings import Settings
from imgbatch.domain.services import Services
from imgbatch.domain.taskqueue import TaskSender
from imgbatch.imaging.profiles import DEFAULT_PROFILE, Profile
from imgbatch.models.idempotency import IdempotencyRepository
from imgbatch.models.products import ProductRepository
from imgbatch.models.requests import RequestRecord, RequestRepository, now
from imgbatch.models.webhooks import WebhookDeliveryRepository, WebhookSubscriberRepository
from imgbatch.storage import MediaStore


async def _settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(_settings)]


async def _requests(state: StateDep) -> RequestRepository:
    return state.services.requests


async def _products(state: StateDep) -> ProductRepository:
    return state.services.products


async def _idempotency(state: StateDep) -> IdempotencyRepository:
    return state.services.idempotency


async def _subscribers(state: StateDep) -> WebhookSubscriberRepository:
    return state.services.subscribers


async def _deliveries(state: StateDep) -> WebhookDeliveryRepository:
    return state.services.deliveries


async def _services(state: StateDep) -> Services:
    return state.services


async def _tasks(state: StateDep) -> TaskSender:
    return state.services.tasks


async def _store(state: StateDep) -> MediaStore:
    return state.services.store


async def _profiles(state: StateDep) -> dict[str, Profile]:
    return state.profiles


ProfilesDep = Annotated[dict[str, Profile], Depends(_profiles)]


def choose_profile(profiles: dict[str, Profile], name: str | None) -> Profile:
    """The profile an upload asked for (``default`` if none); 422 naming the valid ones."""
    chosen = profiles.get(name or DEFAULT_PROFILE)
    if chosen is None:
        raise UnprocessableEntity(
            {
                "message": f"unknown profile {name!r}",
                "valid_profiles": list(profiles),
            }
        )
    return chosen


RequestsDep = Annotated[RequestRepository, Depends(_requests)]
ProductsDep = Annotated[ProductRepository, Depends(_products)]
IdempotencyDep = Annotated[IdempotencyRepository, Depends(_idempotency)]
ServicesDep = Annotated[Services, Depends(_services)]
TasksDep = Annotated[TaskSender, Depends(_tasks)]
StoreDep = Annotated[MediaStore, Depends(_store)]
SubscribersDep = Annotated[WebhookSubscriberRepository, Depends(_subscribers)]
DeliveriesDep = Annotated[WebhookDeliveryRepository, Depends(_deliveries)]


async def get_owned_request(
    requests: RequestRepository, request_id: str, owner: str
) -> RequestRecord:
    """The caller's request: 404 if it is someone else's or unknown, 410 once it has expired."""
    record = await requests.get(request_id, owner=owner)
    if record is None:
        raise NotFound(f"request {request_id} not found")
    if record.is_expired(now()):
        raise Gone(f"request {request_id} has expired and its results were deleted")
    return record


async def _owned_request(request_id: str, owner: OwnerDep, requests: RequestsDep) -> RequestRecord:
    return await get_owned_request(requests, request_id, owner)


# For a route with a ``{request_id}`` path parameter: the caller's own request, or 404/410.
OwnedRequestDep = Annotated[RequestRecord, Depends(_owned_request)]
