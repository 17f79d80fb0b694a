"""``GET /media/{key}``: serve stored output images."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import StoreDep
from api.errors import errors
from core.errors import NotFound

router = APIRouter(tags=["media"])

_DEFAULT_CACHE_CONTROL = "public, max-age=3600"


@router.get(
    "/media/{key:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/jpeg": {}}}, **errors(NotFound)},
)
async def media(key: str, store: StoreDep) -> StreamingResponse:
    stored = await store.open(key)
    if stored is None:
        raise NotFound("no such image")
    return StreamingResponse(
        stored.chunks,
        media_type=stored.content_type,
        headers={
            "Content-Length": str(stored.size),
            "Cache-Control": stored.cache_control or _DEFAULT_CACHE_CONTROL,
        },
    )
