"""``GET /media/{key}``: serve stored output images."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import MediaDep
from models.errors import NotFound

router = APIRouter(tags=["media"])


@router.get("/media/{key:path}", response_class=FileResponse)
async def media(key: str, store: MediaDep) -> FileResponse:
    path = store.path(key)
    if path is None or not path.is_file():
        raise NotFound("no such image")
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"}
    )
