"""Media stores: the one interface every stored output goes through, and its backends."""

from __future__ import annotations

from core.settings import Settings
from storage.base import MediaStore, StoredObject
from storage.keys import IMMUTABLE, InvalidKey, output_key
from storage.local import LocalMediaStore

__all__ = [
    "IMMUTABLE",
    "InvalidKey",
    "LocalMediaStore",
    "MediaStore",
    "StoredObject",
    "create_store",
    "output_key",
]


def create_store(settings: Settings) -> MediaStore:
    """The store ``IMGBATCH_STORAGE`` names."""
    if settings.storage == "s3":
        # Imported here: a process on local storage never loads the S3 client.
        from storage.s3 import S3MediaStore

        return S3MediaStore.from_settings(settings)
    return LocalMediaStore(settings.media_dir)
