"""Guards in front of every route, which run before a byte of the body is read.

FastAPI reads and parses a body (a multipart form, a JSON document) *before* it runs the
route's dependencies, so a dependency cannot stop a 50 MB body from being received, spooled
and parsed for a caller without a key. These ASGI middlewares can: they see the request head
first and answer without ever calling ``receive``.

* :class:`AuthBeforeBody` (outermost): no valid API key is a 401 on every route that needs one
  (the route's own dependency then reuses the owner it found instead of looking the key up
  again).
* :class:`BodySizeLimit`: a 413 from ``Content-Length`` before a byte is read, or as soon as a
  chunked body passes the path's cap: an upload route's own (a sheet's ``MAX_CSV_BYTES``, an
  image's ``MAX_IMAGE_BYTES``), every other route ``MAX_BODY_BYTES``.

A new upload route goes into :func:`upload_limits`; every other route is capped and guarded
without being named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pymongo.errors import ConnectionFailure
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgbatch.api.auth import authenticate, remember_owner
from imgbatch.api.deps import AppState
from imgbatch.api.errors import database_unavailable, error_response
from imgbatch.core.errors import ImgbatchError, PayloadTooLarge
from imgbatch.core.settings import Settings

_SHEET: Final = "/api/upload"
_IMAGE: Final = "/api/images"
#: Routes whose body is an upload, with a cap of its own.
UPLOAD_PATHS: Final = frozenset({_SHEET, _IMAGE})
#: Every route under this prefix needs a key, except the ones in :data:`PUBLIC_API_PATHS`.
KEYED_PREFIX: Final = "/api/"
PUBLIC_API_PATHS: Final = frozenset({"/api/health"})
# Multipart framing adds a little to the file itself; allow for it.
_FRAMING = 64 * 1024


def upload_limits(settings: Settings) -> dict[str, int]:
    """The size cap of each of :data:`UPLOAD_PATHS`: a sheet's, or one image's."""
    return {_SHEET: settings.max_csv_bytes, _IMAGE: settings.max_image_bytes}


def needs_key(path: str) -> bool:
    return path.startswith(KEYED_PREFIX) and path not in PUBLIC_API_PATHS


async def _refuse(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    # "Connection: close": otherwise the server would drain the unread body to keep the
    # connection alive, which is the very read this guard exists to avoid.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


class AuthBeforeBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.imgbatch
        headers = Headers(scope=scope)
        try:
            owner = await authenticate(
                state,
                authorization=headers.get("authorization"),
                x_api_key=headers.get("x-api-key"),
            )
        except ImgbatchError as refused:
            await _refuse(error_response(refused), scope, receive, send)
            return
        except ConnectionFailure as down:
            await _refuse(database_unavailable(down), scope, receive, send)
            return
        remember_owner(scope, owner)
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, uploads: Mapping[str, int], default: int) -> None:
        self.app = app
        self.uploads = dict(uploads)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload_cap = self.uploads.get(scope["path"])
        max_bytes = self.default if upload_cap is None else upload_cap
        limit = max_bytes if upload_cap is None else max_bytes + _FRAMING
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _reject(max_bytes, scope, receive, send)
            return
        received = 0
        exceeded = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # Whatever the app made of the aborted body (a parse error), the client gets a 413.
            if exceeded:
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await _reject(max_bytes, scope, receive, send)
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not response_started:
                await _reject(max_bytes, scope, receive, send)


async def _reject(max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
    too_large = PayloadTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
    await _refuse(error_response(too_large), scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
