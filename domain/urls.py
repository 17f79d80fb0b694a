"""Absolute URLs handed to users, all built from ``IMGBATCH_PUBLIC_BASE_URL``."""

from __future__ import annotations

from core.settings import Settings


def _base(settings: Settings) -> str:
    return str(settings.public_base_url).rstrip("/")


def status_url(settings: Settings, request_id: str) -> str:
    return f"{_base(settings)}/api/status/{request_id}"


def download_url(settings: Settings, request_id: str) -> str:
    return f"{_base(settings)}/api/download/{request_id}"


def results_url(settings: Settings, request_id: str) -> str:
    return f"{_base(settings)}/api/requests/{request_id}/results"


def media_url(settings: Settings, key: str) -> str:
    return f"{_base(settings)}/media/{key}"
