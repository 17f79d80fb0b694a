"""Who is calling: an API key (``Authorization: Bearer`` or ``X-API-Key``) names the owner.

Every request and webhook subscriber belongs to the key that created it; anything owned by
another key is reported as not found, so ids cannot be probed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.types import Scope

from api.deps import DatabaseDep, SettingsDep
from core.errors import ImgbatchError
from core.settings import Settings
from models.db import Database
from models.keys import ApiKeyRepository, hash_key

LOCAL_OWNER = "local"
_OWNER_STATE_KEY = "owner"


class Unauthorized(ImgbatchError):
    status_code = 401
    description = "No API key, or one that is unknown or revoked"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    settings: Settings, db: Database, *, authorization: str | None, x_api_key: str | None
) -> str:
    """The owner of the key in these headers; raises :class:`Unauthorized` (401)."""
    if settings.auth_disabled:
        return LOCAL_OWNER
    key = x_api_key
    if key is None and authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            key = credentials.strip()
    if not key:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    record = await ApiKeyRepository(db).active_by_hash(hash_key(key))
    if record is None:
        raise Unauthorized("the API key is not valid or has been revoked")
    return record.id


def remember_owner(scope: Scope, owner: str) -> None:
    """For guards that authenticate before the route runs: its dependency reuses the answer."""
    scope.setdefault("state", {})[_OWNER_STATE_KEY] = owner


async def current_owner(
    request: Request,
    settings: SettingsDep,
    db: DatabaseDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    owner = request.scope.get("state", {}).get(_OWNER_STATE_KEY)
    if isinstance(owner, str):
        return owner
    return await authenticate(settings, db, authorization=authorization, x_api_key=x_api_key)


OwnerDep = Annotated[str, Depends(current_owner)]
