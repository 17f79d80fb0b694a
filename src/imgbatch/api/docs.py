"""``/docs`` (Swagger UI) and ``/redoc``, from the files the ``fastapi-offline`` package ships.

FastAPI's own pages load Swagger UI and Redoc from a CDN, at floating versions, without SRI:
blank offline, and online a third party's script runs on the origin where the page keeps the
API key. Here every script comes from this server (``/static-docs``, pinned through uv.lock),
and a Content-Security-Policy says so: ``'self'``, plus the hash of the one inline script that
starts Swagger UI.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_STATIC = "/static-docs"
_ASSETS = Path(str(files("fastapi_offline") / "static"))
_TITLE = "imgbatch"

router = APIRouter()


def _csp(html: str) -> str:
    inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    scripts = ["'self'"] + [
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline
    ]
    # Redoc and Swagger UI style their elements inline; Redoc searches in a blob: worker.
    return (
        f"default-src 'none'; script-src {' '.join(scripts)}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode()
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": _csp(html), "Referrer-Policy": "no-referrer"},
    )


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    return _page(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{_TITLE} - Swagger UI",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )
    )


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return _page(
        get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{_TITLE} - ReDoc",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )
    )


def static_files() -> StaticFiles:
    """Mounted at :data:`DOCS_STATIC`: Swagger UI's and Redoc's scripts, style and icon."""
    return StaticFiles(directory=_ASSETS)
