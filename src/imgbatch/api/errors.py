"""The JSON error answers, shared by the app's exception handlers and the ASGI guards in front
of the app (which answer before any route, so the handlers never see their errors)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from imgbatch.core.errors import ImgbatchError
from imgbatch.core.logs import log_event

logger = logging.getLogger(__name__)


def error_response(exc: ImgbatchError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def database_unavailable(exc: Exception) -> JSONResponse:
    log_event(logger, "api.database_unavailable", logging.WARNING, error=type(exc).__name__)
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )
