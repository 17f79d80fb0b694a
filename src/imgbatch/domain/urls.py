"""Absolute URLs handed to users, built from ``IMGBATCH_PUBLIC_BASE_URL`` (and output URLs
from ``IMGBATCH_MEDIA_BASE_URL`` when a CDN or the bucket serves them)."""

from __future__ import annotations

from collections.abc import Sequence

from imgbatch.core.settings import Settings


def _base(settings: Settings) -> str:
    return str(settings.public_base_url).rstrip("/")


def status_url(settings: Settings, request_id: str) -> str:
    return f"{_base(settings)}/api/status/{request_id}"


def download_url(settings: Settings, request_id: str) -> str:
    return f"{_base(settings)}/api/download/{request_id}"


def results_url(settings: Settings, request_id: str) -> str:
    return f"{_base(settings)}/api/requests/{request_id}/results"


def media_url(settings: Settings, key: str) -> str:
    if settings.media_base_url is not None:
        return f"{str(settings.media_base_url).rstrip('/')}/{key}"
    return f"{_base(settings)}/media/{key}"


def output_urls(settings: Settings, keys: Sequence[str | None]) -> list[str | None]:
    """Public URLs of stored outputs, None where the image failed (status, CSV and events)."""
    return [media_url(settings, key) if key else None for key in keys]
