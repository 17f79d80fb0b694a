"""Per-key upload rate: a fixed window counted in Redis. (The cap on unfinished requests is a
slot each request holds: domain.inflight.)

The limiter fails open: if Redis does not answer, the upload is not refused for that reason
(the request is stored in MongoDB and the reconciler dispatches it once Redis is back).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi import Request
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgbatch.api.deps import AppState
from imgbatch.core.errors import ImgbatchError
from imgbatch.core.logs import log_event

logger = logging.getLogger(__name__)

_STATE_KEY = "rate_limit"


class TooManyRequests(ImgbatchError):
    status_code = 429


@dataclass(frozen=True)
class RateLimit:
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


async def limit_uploads(
    request: Request, owner: str, state: AppState, *, consume: bool = True
) -> RateLimit:
    """Count one upload against the caller's window (429 over it). ``consume=False`` only reads
    the window, for an answer that creates nothing (an idempotent replay) but still carries the
    headers."""
    settings = state.settings
    window = settings.rate_limit_window_seconds
    window_start = int(time.time()) // window * window
    reset = window_start + window - int(time.time())
    try:
        key = f"imgbatch:ratelimit:uploads:{owner}:{window_start}"
        if consume:
            async with state.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window + 1)
                used, _ = await pipe.execute()
        else:
            used = await state.redis.get(key) or 0
    except RedisError as exc:
        log_event(logger, "ratelimit.unavailable", logging.WARNING, error=type(exc).__name__)
        used = 0
    limit = RateLimit(settings.rate_limit_uploads, settings.rate_limit_uploads - int(used), reset)
    # Picked up by RateLimitHeaders, so errors raised later in the request carry them too.
    request.state.rate_limit = limit
    if consume and int(used) > settings.rate_limit_uploads:
        raise TooManyRequests(
            f"upload rate limit of {settings.rate_limit_uploads} per {window}s exceeded",
            headers={"Retry-After": str(max(reset, 1))},
        )
    return limit


class RateLimitHeaders:
    """Adds the caller's ``X-RateLimit-*`` headers to whatever response the route produced."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            limit = scope.get("state", {}).get(_STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(limit, RateLimit):
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in limit.headers().items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
