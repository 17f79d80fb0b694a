"""Media on a local (or shared) filesystem, one file per key under a root directory.

Each object's metadata (content type, cache control) sits beside it in a small JSON file named
``.meta-<name>``: a filesystem has nowhere else portable to keep it (extended attributes are
missing on some of the filesystems this runs on), and keys never have parts starting with
``.``, so these names can never collide with a key.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from imgbatch.storage.base import StoredObject
from imgbatch.storage.keys import check_key, check_prefix, check_public_key

_CHUNK = 256 * 1024
_META = ".meta-"
_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".png": "image/png",
    ".avif": "image/avif",
}


class LocalMediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        # check_key refuses "..", absolute and hidden parts, so the path stays under the root.
        return self.root / check_key(key)

    async def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        await asyncio.to_thread(
            self._write, self._path(key), data, _meta(content_type, cache_control)
        )

    async def put_file(
        self, key: str, path: Path, *, content_type: str, cache_control: str | None = None
    ) -> None:
        await asyncio.to_thread(
            self._write, self._path(key), path, _meta(content_type, cache_control)
        )

    @staticmethod
    def _write(target: Path, data: bytes | Path, meta: bytes) -> None:
        """``data``, or the file at that path, copied in pieces (result files are large)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        # Metadata first: a crash between the two leaves no object, never one without its type.
        _replace(_meta_path(target), meta)
        _replace(target, data)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    async def open(
        self, key: str, byte_range: tuple[int, int] | None = None
    ) -> StoredObject | None:
        path = self._path(key)
        try:
            handle, meta = await asyncio.to_thread(_open_with_meta, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        size = os.fstat(handle.fileno()).st_size
        start, end = byte_range or (0, size)
        handle.seek(start)
        return StoredObject(
            key=key,
            size=size,
            content_type=meta.get("content_type") or _content_type(key),
            cache_control=meta.get("cache_control"),
            chunks=_read_chunks(handle, end - start),
        )

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, self.root / check_prefix(prefix))

    @staticmethod
    def _delete_prefix(base: Path) -> int:
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
        shutil.rmtree(base, ignore_errors=True)
        return count

    async def presigned_url(self, key: str, *, expires_in: int) -> str | None:
        check_public_key(key)
        return None  # a disk has no URL of its own: /media streams it


def _meta(content_type: str, cache_control: str | None) -> bytes:
    return json.dumps({"content_type": content_type, "cache_control": cache_control}).encode()


def _replace(target: Path, data: bytes | Path) -> None:
    """Write then rename, so a reader (or a crash) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, Path):
                with data.open("rb") as source:
                    shutil.copyfileobj(source, handle, _CHUNK)
            else:
                handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _meta_path(path: Path) -> Path:
    return path.with_name(_META + path.name)


def _open_with_meta(path: Path) -> tuple[BinaryIO, dict[str, str | None]]:
    handle = path.open("rb")
    try:
        meta = json.loads(_meta_path(path).read_bytes())
    except (FileNotFoundError, ValueError):
        meta = {}  # written before metadata was kept: the type follows from the extension
    except BaseException:
        handle.close()
        raise
    return handle, meta


async def _read_chunks(handle: BinaryIO, remaining: int) -> AsyncIterator[bytes]:
    try:
        while remaining > 0 and (
            chunk := await asyncio.to_thread(handle.read, min(_CHUNK, remaining))
        ):
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


def _content_type(key: str) -> str:
    return _TYPES.get(os.path.splitext(key)[1].lower(), "application/octet-stream")
