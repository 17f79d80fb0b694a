"""The web page at ``/``: plain HTML, CSS and JavaScript from ``api/static/``, no build step and
nothing from a CDN (the Content-Security-Policy allows scripts and styles from here only)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(tags=["page"])

# Images may live on another origin (an S3 bucket or CDN); everything that runs comes from us.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        headers={
            "Content-Security-Policy": _CSP,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def static_files() -> StaticFiles:
    """Mounted at ``/static``: the page's script, style and icon."""
    return StaticFiles(directory=STATIC_DIR)
