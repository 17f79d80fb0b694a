"""``GET /media/{key}``: serve stored output images from whichever store is configured.

Streamed through the API by default; with ``IMGBATCH_MEDIA_REDIRECT=presigned`` a redirect to
a presigned URL of the object store, so the bytes go from the store to the client directly.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from imgbatch.api.deps import SettingsDep, StoreDep
from imgbatch.api.openapi import errors
from imgbatch.core.errors import NotFound
from imgbatch.storage import InvalidKey, StorageUnavailable, is_public_key

router = APIRouter(tags=["media"])

# For objects stored without a policy of their own (outputs under positional keys, which a
# re-run overwrites): caches may keep them an hour.
_DEFAULT_CACHE_CONTROL = "public, max-age=3600"


@router.get(
    "/media/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {f"image/{kind}": {} for kind in ("jpeg", "webp", "avif", "png")}},
        302: {"description": "IMGBATCH_MEDIA_REDIRECT=presigned: the object's presigned URL"},
        **errors(NotFound, StorageUnavailable),
    },
)
async def media(key: str, store: StoreDep, settings: SettingsDep) -> Response:
    # Originals of single-image jobs share the store but are never served, in either mode (no
    # stream, no presigned URL): the same 404 as a missing key, so their existence is not
    # revealed either.
    if not is_public_key(key):
        raise NotFound("no such image")
    try:
        # Asked first so that a missing image is our 404, not the store's XML error page.
        if settings.media_redirect == "presigned" and await store.exists(key):
            expires_in = settings.media_presign_seconds
            url = await store.presigned_url(key, expires_in=expires_in)
            if url is not None:
                # A client may reuse the redirect for half the signature's life, not past it.
                cache = f"private, max-age={expires_in // 2}"
                return RedirectResponse(url, status_code=302, headers={"Cache-Control": cache})
        stored = await store.open(key)
    except InvalidKey:
        stored = None
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
