"""Media stores: the one interface every stored output goes through, and its backends."""

from __future__ import annotations

from core.settings import Settings
from storage.base import InvalidKey, MediaStore, StoredObject
from storage.keys import output_key
from storage.local import LocalMediaStore

__all__ = [
    "InvalidKey",
    "LocalMediaStore",
    "MediaStore",
    "StoredObject",
    "create_store",
    "output_key",
]


def create_store(settings: Settings) -> MediaStore:
    """The store the settings name (only ``local`` so far)."""
    return LocalMediaStore(settings.media_dir)
