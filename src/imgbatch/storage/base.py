"""The media store: where output images (and temporary originals) live, behind one interface.

Nothing outside a store touches a file path or an object-storage client: workers ``put``,
``/media`` ``open``s, retention calls ``delete_prefix``. Keys are ``/``-separated relative
names such as ``{request_id}/{serial}/{index}.jpg`` (rules in :mod:`storage.keys`). Every
method raises :class:`storage.keys.InvalidKey` for a key that breaks them, on every backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imgbatch.core.errors import ServiceUnavailable
from imgbatch.storage.keys import InvalidKey

__all__ = ["InvalidKey", "MediaStore", "StorageUnavailable", "StoredObject"]


class StorageUnavailable(ServiceUnavailable):
    """The object store failed a call (down, restarting, or answering errors) after its
    client's own retries: the API answers 503 with ``Retry-After``, never 500, and a task
    retries later (domain.taskqueue), as for a database outage. Not for a missing key."""

    description = "The media store is unavailable; retry after Retry-After seconds"

    def __init__(self, detail: str = "the media store is unavailable; try again shortly") -> None:
        # The detail has a default so that the error pickles (Celery's retry carries it).
        super().__init__(detail, headers={"Retry-After": "5"})


@dataclass(frozen=True)
class StoredObject:
    """An object opened for reading: its metadata, and its bytes as a stream of chunks."""

    key: str
    size: int
    content_type: str
    cache_control: str | None
    chunks: AsyncIterator[bytes]


class MediaStore(Protocol):
    async def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Store ``data`` under ``key``, replacing what was there; readers never see half.

        ``content_type`` and ``cache_control`` are kept with the object and served with it;
        pass :data:`storage.keys.IMMUTABLE` for keys whose bytes never change.
        """
        ...

    async def get(self, key: str) -> bytes | None:
        """The whole object, or None if there is none."""
        ...

    async def put_file(
        self, key: str, path: Path, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """:meth:`put` from a file, without reading it into memory (the result files of a
        request can be hundreds of MB)."""
        ...

    async def open(
        self, key: str, byte_range: tuple[int, int] | None = None
    ) -> StoredObject | None:
        """The object as a stream, for serving it; None if there is none.

        With ``byte_range`` (``start``, ``end`` exclusive, within the object: the caller checks
        it against :meth:`size`) only those bytes are streamed; ``size`` stays the object's.
        """
        ...

    async def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if there is none."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (which ends with ``/``);
        returns how many went."""
        ...

    async def presigned_url(self, key: str, *, expires_in: int) -> str | None:
        """A URL that serves the object without our API for ``expires_in`` seconds, or None
        when this store cannot make one (a local disk). Never for a temporary object (``tmp/``,
        :func:`storage.keys.is_public_key`): :class:`InvalidKey`."""
        ...
