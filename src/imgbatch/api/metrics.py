"""``GET /metrics``: Prometheus text, summed over every process of the stack.

Counters and histograms come from the multiprocess directory (see :mod:`core.metrics`); gauges
that describe the state of the world are read at scrape time: requests in progress from MongoDB,
queue depths from Redis. Each source that does not answer within a second is left out of that
scrape and reported by ``imgbatch_scrape_source_up``, so a scrape never hangs on an outage.

Served to a bearer of ``IMGBATCH_METRICS_TOKEN``; with no token set, to loopback clients only
(behind a proxy on the same host, set a token: the proxy's clients would all look local).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from imgbatch.api.auth import Unauthorized
from imgbatch.api.deps import StateDep
from imgbatch.api.openapi import errors
from imgbatch.core import metrics
from imgbatch.core.errors import ImgbatchError
from imgbatch.domain.taskqueue import queue_depths

router = APIRouter(tags=["operating"])

_SOURCE_TIMEOUT = 1.0


class MetricsForbidden(ImgbatchError):
    status_code = 403
    description = "No IMGBATCH_METRICS_TOKEN is set, so metrics are served to this host only"


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _authorize(request: Request, state: StateDep, authorization: str | None) -> None:
    token = state.settings.metrics_token
    if token is None:
        if not _is_loopback(request.client.host if request.client else ""):
            raise MetricsForbidden("set IMGBATCH_METRICS_TOKEN to scrape from another host")
        return
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("send `Authorization: Bearer <IMGBATCH_METRICS_TOKEN>`")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **errors(Unauthorized, MetricsForbidden),
    },
)
async def scrape(
    request: Request,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    _authorize(request, state, authorization)
    body = await run_in_threadpool(metrics.render, await _state_of_the_world(state))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _state_of_the_world(state: StateDep) -> list[Metric]:
    families: list[Metric] = []
    up: dict[tuple[str, ...], float] = {("mongodb",): 0, ("redis",): 0}
    try:
        async with asyncio.timeout(_SOURCE_TIMEOUT):
            in_progress = await state.services.request_stats.count_unfinished()
    except (PyMongoError, TimeoutError):
        pass
    else:
        up["mongodb",] = 1
        families.append(
            metrics.gauge_family(
                "imgbatch_requests_in_progress",
                "Requests accepted and not finished yet (pending or in_progress), all owners.",
                {(): in_progress},
                [],
            )
        )
    try:
        async with asyncio.timeout(_SOURCE_TIMEOUT):
            depths = await queue_depths(state.redis)
    except (RedisError, OSError, TimeoutError):
        pass
    else:
        up["redis",] = 1
        families.append(
            metrics.gauge_family(
                "imgbatch_queue_depth",
                "Messages waiting in each Celery queue (all priority lists), read from Redis.",
                {(queue,): depth for queue, depth in depths.items()},
                ["queue"],
            )
        )
    families.append(
        metrics.gauge_family(
            "imgbatch_scrape_source_up",
            "1 if the source answered this scrape, else 0 (its gauges are left out).",
            up,
            ["source"],
        )
    )
    return families
