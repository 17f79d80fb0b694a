"""``GET /api/health``: 200 when MongoDB and Redis both answer, 503 naming the one that doesn't."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from imgbatch.api.deps import StateDep
from imgbatch.core.errors import ServiceUnavailable

router = APIRouter(tags=["health"])

_TIMEOUT = 2.0

Check = Literal["ok", "unavailable"]


class Healthy(BaseModel):
    status: Literal["ok"]
    mongodb: Check
    redis: Check


class Unhealthy(BaseModel):
    """MongoDB or Redis did not answer within 2 s; ``detail`` names which."""

    detail: str
    mongodb: Check
    redis: Check


@router.get(
    "/api/health",
    response_model=Healthy,
    responses={503: {"model": Unhealthy, "description": ServiceUnavailable.docs_description()}},
)
async def health(state: StateDep) -> JSONResponse:
    checks = {"mongodb": _ping_mongo(state), "redis": _ping_redis(state)}
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    down = [name for name, ok in results.items() if not ok]
    body = {name: "ok" if ok else "unavailable" for name, ok in results.items()}
    if down:
        return JSONResponse(
            {"detail": f"unavailable: {', '.join(down)}", **body},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ok", **body})


async def _ping_mongo(state: StateDep) -> bool:
    try:
        async with asyncio.timeout(_TIMEOUT):
            await state.db.command("ping")
    except Exception:
        return False
    return True


async def _ping_redis(state: StateDep) -> bool:
    try:
        async with asyncio.timeout(_TIMEOUT):
            return bool(await state.redis.ping())
    except Exception:
        return False
