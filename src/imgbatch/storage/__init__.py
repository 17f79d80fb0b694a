"""Media stores: the one interface every stored output goes through, and its backends."""

from __future__ import annotations

from imgbatch.core.settings import Settings
from imgbatch.storage.base import MediaStore, StorageUnavailable, StoredObject
from imgbatch.storage.keys import (
    IMMUTABLE,
    RESULTS_PREFIX,
    TEMP_PREFIX,
    InvalidKey,
    folder_of,
    is_public_key,
    media_prefix,
    temp_key,
    variant_key,
)
from imgbatch.storage.local import LocalMediaStore

__all__ = [
    "IMMUTABLE",
    "RESULTS_PREFIX",
    "TEMP_PREFIX",
    "InvalidKey",
    "LocalMediaStore",
    "MediaStore",
    "StorageUnavailable",
    "StoredObject",
    "create_store",
    "folder_of",
    "is_public_key",
    "media_prefix",
    "temp_key",
    "variant_key",
]


def create_store(settings: Settings) -> MediaStore:
    """The store ``IMGBATCH_STORAGE`` names."""
    if settings.storage == "s3":
        # Imported here: a process on local storage never loads the S3 client.
        from imgbatch.storage.s3 import S3MediaStore

        return S3MediaStore.from_settings(settings)
    return LocalMediaStore(settings.media_dir)
