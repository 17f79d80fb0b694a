"""Who is calling: an API key (``Authorization: Bearer`` or ``X-API-Key``) names the owner, or
a JWT bearer token's ``sub`` does when JWTs are configured (api/tokens.py).

Every request and webhook subscriber belongs to the key that created it; anything owned by
another key is reported as not found, so ids cannot be probed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.types import Scope

from imgbatch.api.deps import AppState, StateDep
from imgbatch.api.tokens import looks_like_jwt
from imgbatch.core.errors import ImgbatchError
from imgbatch.models.keys import ApiKeyRepository, hash_key

LOCAL_OWNER = "local"
_OWNER_STATE_KEY = "owner"


class Unauthorized(ImgbatchError):
    status_code = 401
    description = "No API key, or one that is unknown or revoked"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(state: AppState, *, authorization: str | None, x_api_key: str | None) -> str:
    """The owner of the key in these headers; raises :class:`Unauthorized` (401)."""
    if state.settings.auth_disabled:
        return LOCAL_OWNER
    key = x_api_key
    if key is None and authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            key = credentials.strip()
    if not key:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    if state.tokens is not None and looks_like_jwt(key):
        subject = state.tokens.owner(key)
        if subject is None:
            raise Unauthorized(
                "the bearer token is not valid (signature, expiry, audience or issuer)"
            )
        return subject
    owner = await _owner_of(state, hash_key(key))
    if owner is None:
        raise Unauthorized("the API key is not valid or has been revoked")
    return owner


async def _owner_of(state: AppState, key_hash: str) -> str | None:
    """The owner of an active key with this hash, from memory if read within the last
    ``key_cache_seconds``: every status poll comes through here before the status cache is
    consulted, so without this each poll costs a MongoDB read however warm that cache is.
    Concurrent misses share one read.

    Unknown hashes are remembered too (None), just as briefly: a new key's hash has never been
    asked about before it exists (256 random bits), so this cannot make a fresh key fail, and a
    client retrying a bad key costs one read a second instead of one per attempt. Keyed by the
    hash: the key itself is never kept.
    """

    async def load() -> str | None:
        record = await ApiKeyRepository(state.db).active_by_hash(key_hash)
        return record.id if record else None

    return await state.key_cache.get_or_load(key_hash, load)


def remember_owner(scope: Scope, owner: str) -> None:
    """For guards that authenticate before the route runs: its dependency reuses the answer."""
    scope.setdefault("state", {})[_OWNER_STATE_KEY] = owner


async def current_owner(
    request: Request,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    owner = request.scope.get("state", {}).get(_OWNER_STATE_KEY)
    if isinstance(owner, str):
        return owner
    return await authenticate(state, authorization=authorization, x_api_key=x_api_key)


OwnerDep = Annotated[str, Depends(current_owner)]
