"""Every HTTP request, measured and logged once: its duration by route template and status
(``imgbatch_http_request_duration_seconds``) and one ``http.request`` line, which replaces
uvicorn's access log.

Each request gets an ``X-Request-ID`` (the caller's, capped, or a new one), echoed in the
response and bound as ``http_request_id`` to every line logged while it is handled; a handler
that works on an upload binds its ``request_id`` too, and the access line carries both.

Every answer, JSON, media, errors and pages alike, also says ``X-Content-Type-Options:
nosniff``: a browser must take a stored image or a JSON body for what its Content-Type says,
never sniff it into HTML or script.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgbatch.core import metrics
from imgbatch.core.logs import bind_context, clear_context, log_event

logger = logging.getLogger("api.access")

# A caller's id is echoed and logged: bounded, so it cannot bloat every line.
_MAX_ID_LENGTH = 64
# Requests that matched no route are counted under one label, never their raw path (each
# scanner probe would be a new time series).
UNMATCHED = "<unmatched>"
_NOSNIFF = (b"x-content-type-options", b"nosniff")


async def bind_request_id(request: Request) -> None:
    """A dependency of every route: a call about one request (``/.../{request_id}``) names it
    on every line it logs, the access line included, even when it is answered from a cache."""
    request_id = request.path_params.get("request_id")
    if request_id:
        bind_context(request_id=request_id)


class HttpObservability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what an exception that escapes the app becomes
        given = dict(scope["headers"]).get(b"x-request-id", b"")[:_MAX_ID_LENGTH]
        http_request_id = given.decode("latin-1") or uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    *(h for h in message.get("headers", []) if h[0].lower() != _NOSNIFF[0]),
                    (b"x-request-id", http_request_id.encode()),
                    _NOSNIFF,
                ]
                message = {**message, "headers": headers}
            await send(message)

        # uvicorn runs each request in a task of its own with a copy of the context, so what
        # is bound here (and by the handler) ends with the request.
        clear_context()
        bind_context(http_request_id=http_request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The router stored the matched route in this same scope dict.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            elapsed = time.perf_counter() - started
            metrics.HTTP_REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(
                elapsed
            )
            log_event(
                logger,
                "http.request",
                method=scope["method"],
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 1),
            )
