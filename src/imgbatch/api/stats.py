"""``GET /api/stats``: is it keeping up, and what is failing, for the caller's API key.

Everything is scoped to the key's own requests except what is shared by all (queue depths and
the workers alive). Throughput comes from per-minute activity counters (models/activity.py), so
the answer costs a few index reads however large the owner's history is.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import StateDep
from imgbatch.api.openapi import errors
from imgbatch.domain.taskqueue import queue_depths
from imgbatch.models.activity import ActivityMinute
from imgbatch.models.requests import RequestStatus, now

router = APIRouter(tags=["operating"])

WINDOWS_MINUTES = (1, 5, 15)
FAILURES_WINDOW = timedelta(hours=24)
_REDIS_TIMEOUT = 1.0


class ImagesDone(BaseModel):
    last_1m: int
    last_5m: int
    last_15m: int


class StatsView(BaseModel):
    requests: dict[str, int] = Field(description="The key's requests by status (every status).")
    images_done: ImagesDone = Field(description="Images done in the last 1, 5 and 15 minutes.")
    images_per_second: float = Field(description="Images done per second over the last minute.")
    failures_24h: dict[str, int] = Field(description="Failed images by error code, last 24 h.")
    warnings_24h: dict[str, int] = Field(
        description="Catalogue-quality warnings of images done, by code, last 24 h."
    )
    queues: dict[str, int] | None = Field(
        description="Messages waiting per queue, all keys (null if Redis did not answer)."
    )
    workers: list[str] = Field(description="Workers that answered a ping (all keys).")
    workers_alive: int
    oldest_pending_age_seconds: float | None = Field(
        description="Age of the key's oldest request not dispatched yet (null: none)."
    )
    oldest_in_progress_age_seconds: float | None = Field(
        description="Age of the key's oldest request being processed (null: none)."
    )


def window_count(minutes: list[ActivityMinute], at: datetime, seconds: float) -> float:
    """Images done in the ``seconds`` before ``at``, from per-minute counts.

    The oldest minute overlaps the window only in part and counts in proportion (the
    sliding-window counter approximation); the current minute counts whole.
    """
    start = at - timedelta(seconds=seconds)
    total = 0.0
    for bucket in minutes:
        end = min(bucket.minute + timedelta(minutes=1), at)
        span = (end - bucket.minute).total_seconds()
        overlap = (end - max(bucket.minute, start)).total_seconds()
        if span > 0 and overlap > 0:
            total += bucket.done * min(overlap / span, 1.0)
    return total


@router.get("/api/stats", response_model=StatsView, responses=errors(Unauthorized))
async def stats(owner: OwnerDep, state: StateDep) -> StatsView:
    at = now()
    requests = state.services.request_stats
    by_status = await requests.by_status(owner)
    activity = await state.services.activity.since(owner, at - FAILURES_WINDOW)
    recent = [m for m in activity if m.minute >= at - timedelta(minutes=max(WINDOWS_MINUTES) + 1)]
    done = {n: round(window_count(recent, at, n * 60)) for n in WINDOWS_MINUTES}
    failures: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for minute in activity:
        failures.update(minute.codes)
        warnings.update(minute.warnings)
    workers = await state.workers_cache.get_or_load("workers", state.services.tasks.workers_alive)
    oldest = {
        status: await requests.oldest_created(owner, status)
        for status in (RequestStatus.PENDING, RequestStatus.IN_PROGRESS)
    }
    return StatsView(
        requests={status.value: by_status.get(status.value, 0) for status in RequestStatus},
        images_done=ImagesDone(last_1m=done[1], last_5m=done[5], last_15m=done[15]),
        images_per_second=round(window_count(recent, at, 60) / 60, 3),
        failures_24h=dict(failures),
        warnings_24h=dict(warnings),
        queues=await _queues(state),
        workers=workers,
        workers_alive=len(workers),
        oldest_pending_age_seconds=_age(oldest[RequestStatus.PENDING], at),
        oldest_in_progress_age_seconds=_age(oldest[RequestStatus.IN_PROGRESS], at),
    )


async def _queues(state: StateDep) -> dict[str, int] | None:
    try:
        async with asyncio.timeout(_REDIS_TIMEOUT):
            return await queue_depths(state.redis)
    except (RedisError, OSError, TimeoutError):
        return None


def _age(created: datetime | None, at: datetime) -> float | None:
    return round((at - created).total_seconds(), 3) if created is not None else None
