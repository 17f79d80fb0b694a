"""The FastAPI application: lifespan-owned clients, routers and the one exception handler."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError
from redis.asyncio import Redis

# Before anything that counts: it checks prometheus_client came up in multiprocess mode.
import imgbatch.core.metrics  # noqa: F401
from imgbatch.api import (
    audit,
    controls,
    docs,
    events,
    health,
    images,
    media,
    metrics,
    page,
    profiles,
    requests,
    stats,
    uploads,
    webhooks,
)
from imgbatch.api.body_guard import AuthBeforeBody, BodySizeLimit, upload_limits
from imgbatch.api.errors import database_unavailable, error_response
from imgbatch.api.feeds import EventHub
from imgbatch.api.observability import HttpObservability, bind_request_id
from imgbatch.api.openapi import add_links
from imgbatch.api.ratelimits import RateLimitHeaders
from imgbatch.api.state import AppState
from imgbatch.core.errors import ImgbatchError
from imgbatch.core.logs import configure_logging, log_event
from imgbatch.core.settings import Settings, get_settings
from imgbatch.domain.events import CHANGES_CHANNEL, RedisEventPublisher
from imgbatch.domain.services import Services
from imgbatch.domain.sheet_parse import start_parser_server
from imgbatch.domain.taskqueue import CeleryTaskSender
from imgbatch.imaging.profiles import available_profiles
from imgbatch.models.db import database, mongo_client
from imgbatch.models.migrations import migrate
from imgbatch.storage import create_store

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Here rather than in the lifespan: uvicorn's own start-up lines are structured too.
    configure_logging(settings.log_level, settings.log_format)
    # A bad IMGBATCH_PROFILES stops the API here, not at the first upload that names it.
    output_profiles = available_profiles(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Before any client's threads exist; and the first upload does not wait for it.
        await asyncio.to_thread(start_parser_server)
        mongo = mongo_client(settings)
        db = database(mongo, settings)
        redis = Redis.from_url(settings.require_redis_url())
        try:
            await migrate(db)
        except PyMongoError as exc:
            # Start anyway: health says 503 and requests get 503 until MongoDB answers.
            log_event(logger, "api.indexes_deferred", logging.WARNING, error=type(exc).__name__)
        services = Services(
            settings=settings,
            db=db,
            tasks=CeleryTaskSender.from_settings(settings),
            store=create_store(settings),
            events=RedisEventPublisher(redis),
        )
        app.state.imgbatch = AppState(
            settings=settings,
            mongo=mongo,
            db=db,
            redis=redis,
            services=services,
            profiles=output_profiles,
            events=EventHub(redis, services.requests, settings),
        )
        # What other processes changed (cancel and retry in another API process, a worker's
        # completion, a revoked key) drops this process's cached answers at once.
        app.state.imgbatch.events.listen(CHANGES_CHANNEL, app.state.imgbatch.forget)
        # Everything start-up made (modules, routes, schemas, settings) is kept for the process's
        # life: moved out of the collector's reach, a full collection no longer walks it. Each
        # one stalled the event loop ~120 ms, the slowest 1 % of status polls during a batch
        # (bench/README, round six, item 7). Collected first, so no garbage is kept with it.
        gc.collect()
        gc.freeze()
        log_event(logger, "api.started", public_base_url=settings.public_base_url)
        try:
            yield
        finally:
            await app.state.imgbatch.events.close()
            await redis.aclose()
            await mongo.close()

    app = FastAPI(
        title="imgbatch",
        version="0.1.0",
        # Served by api/docs.py from packaged files instead of FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(bind_request_id)],
    )
    app.add_middleware(RateLimitHeaders)
    # Starlette runs the middleware added last first: the key is checked, then the size (an
    # upload route's own cap, MAX_BODY_BYTES for any other), and only then may a parser read a
    # byte of the body, never more than the cap.
    app.add_middleware(
        BodySizeLimit, uploads=upload_limits(settings), default=settings.max_body_bytes
    )
    app.add_middleware(AuthBeforeBody)
    # Outermost: it times and logs the whole request, the guards' 401s and 413s included, and
    # gives every answer its X-Request-ID and nosniff.
    app.add_middleware(HttpObservability)
    modules = (
        uploads,
        images,
        requests,
        events,
        audit,
        controls,
        stats,
        webhooks,
        media,
        profiles,
        health,
        metrics,
        page,
        docs,
    )
    for module in modules:
        app.include_router(module.router)
    app.mount("/static", page.static_files(), name="static")
    app.openapi = _with_links(app)  # type: ignore[method-assign]  # FastAPI documents this
    app.mount(docs.DOCS_STATIC, docs.static_files(), name="static-docs")

    @app.exception_handler(ImgbatchError)
    async def imgbatch_error(_: Request, exc: ImgbatchError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ConnectionFailure)
    async def database_down(_: Request, exc: ConnectionFailure) -> JSONResponse:
        return database_unavailable(exc)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("api.unexpected_error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


def _with_links(app: FastAPI) -> Callable[[], dict[str, Any]]:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(generate())
        return app.openapi_schema

    return openapi
