"""Media stores: the one interface every stored output goes through, and its backends."""

from __future__ import annotations

from core.settings import Settings
from storage.base import InvalidKey, MediaStore, StoredObject
from storage.keys import (
    IMMUTABLE,
    TEMP_PREFIX,
    cache_control_for,
    is_public_key,
    media_prefix,
    output_key,
    temp_key,
    variant_key,
)
from storage.local import LocalMediaStore

__all__ = [
    "IMMUTABLE",
    "TEMP_PREFIX",
    "InvalidKey",
    "LocalMediaStore",
    "MediaStore",
    "StoredObject",
    "cache_control_for",
    "create_store",
    "is_public_key",
    "media_prefix",
    "output_key",
    "temp_key",
    "variant_key",
]


def create_store(settings: Settings) -> MediaStore:
    """The store the settings name (only ``local`` so far)."""
    return LocalMediaStore(settings.media_dir)
