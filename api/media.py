"""``GET /media/{key}``: serve stored output images."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import StoreDep
from core.errors import NotFound
from storage import cache_control_for, is_public_key

router = APIRouter(tags=["media"])

_DEFAULT_CACHE_CONTROL = "public, max-age=3600"


@router.get(
    "/media/{key:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such image"}},
)
async def media(key: str, store: StoreDep) -> StreamingResponse:
    # Originals of single-image jobs share the store but are never served: same 404 as a
    # missing key, so their existence is not revealed either.
    stored = await store.open(key) if is_public_key(key) else None
    if stored is None:
        raise NotFound("no such image")
    return StreamingResponse(
        stored.chunks,
        media_type=stored.content_type,
        headers={
            "Content-Length": str(stored.size),
            "Cache-Control": stored.cache_control
            or cache_control_for(key)
            or _DEFAULT_CACHE_CONTROL,
        },
    )
