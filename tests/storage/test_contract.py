"""The media store contract: the local disk and S3 (a real SeaweedFS) behave the same way.

Every test runs on both backends. Keys live under a fresh prefix per test, so the S3 tests can
share the session's bucket.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from imgbatch.core.settings import Settings
from imgbatch.storage import IMMUTABLE, InvalidKey, MediaStore, StoredObject, create_store

T = TypeVar("T")


class Backend:
    """A store and the loop its coroutines run on, with keys under this test's own prefix."""

    def __init__(self, name: str, store: MediaStore) -> None:
        self.name = name
        self.store = store
        self.prefix = f"contract-{uuid.uuid4().hex}/"
        self.loop = asyncio.new_event_loop()

    def key(self, rest: str) -> str:
        return self.prefix + rest

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def read(self, stored: StoredObject) -> list[bytes]:
        async def collect() -> list[bytes]:
            return [chunk async for chunk in stored.chunks]

        return self.run(collect())


# The s3 backend runs against an embedded SeaweedFS: a server, so the `stack` lane.
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.stack)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        settings = Settings(data_dir=tmp_path)
    else:
        settings = request.getfixturevalue("s3_settings")
    assert settings.storage == request.param
    running = Backend(request.param, create_store(settings))
    try:
        yield running
    finally:
        running.loop.close()


def test_put_then_get_open_and_exists(backend: Backend) -> None:
    key = backend.key("1/0.jpg")
    backend.run(backend.store.put(key, b"\xff\xd8\xffjpeg", content_type="image/jpeg"))
    assert backend.run(backend.store.get(key)) == b"\xff\xd8\xffjpeg"
    assert backend.run(backend.store.exists(key)) is True
    stored = backend.run(backend.store.open(key))
    assert stored is not None
    assert (stored.key, stored.size, stored.content_type) == (key, 7, "image/jpeg")
    assert stored.cache_control is None
    assert b"".join(backend.read(stored)) == b"\xff\xd8\xffjpeg"


def test_objects_keep_the_content_type_and_cache_control_they_were_put_with(
    backend: Backend,
) -> None:
    # The type given wins over the one the extension suggests; the cache policy is kept.
    key = backend.key("sha256/ab/abcdef.jpg")
    backend.run(
        backend.store.put(key, b"RIFF....WEBP", content_type="image/webp", cache_control=IMMUTABLE)
    )
    stored = backend.run(backend.store.open(key))
    assert stored is not None
    assert stored.content_type == "image/webp"
    assert stored.cache_control == IMMUTABLE == "public, max-age=31536000, immutable"
    backend.read(stored)


def test_a_put_replaces_the_object_and_its_metadata(backend: Backend) -> None:
    key = backend.key("1/0.jpg")
    backend.run(
        backend.store.put(key, b"first, longer", content_type="image/png", cache_control=IMMUTABLE)
    )
    backend.run(backend.store.put(key, b"second", content_type="image/jpeg"))
    assert backend.run(backend.store.get(key)) == b"second"
    stored = backend.run(backend.store.open(key))
    assert stored is not None
    assert (stored.size, stored.content_type, stored.cache_control) == (6, "image/jpeg", None)
    assert backend.read(stored) == [b"second"]


def test_a_file_is_put_from_disk_sized_and_read_by_byte_range(
    backend: Backend, tmp_path: Path
) -> None:
    # Larger than one streamed chunk (256 KB), so a range crosses chunk boundaries.
    data = bytes(range(256)) * 4096 + b"tail"
    source = tmp_path / "results.csv"
    source.write_bytes(data)
    key = backend.key("results/r1/g1/results.csv")
    backend.run(
        backend.store.put_file(
            key, source, content_type="text/csv; charset=utf-8", cache_control="private, no-cache"
        )
    )
    assert backend.run(backend.store.size(key)) == len(data)
    assert backend.run(backend.store.size(backend.key("results/r1/g1/none.csv"))) is None
    for first, end in ((0, 10), (1000, 300_000), (len(data) - 4, len(data)), (0, len(data))):
        stored = backend.run(backend.store.open(key, (first, end)))
        assert stored is not None
        assert (stored.size, stored.content_type) == (len(data), "text/csv; charset=utf-8")
        assert stored.cache_control == "private, no-cache"
        assert b"".join(backend.read(stored)) == data[first:end], (first, end)


def test_missing_objects_are_none_and_folders_are_not_objects(backend: Backend) -> None:
    backend.run(backend.store.put(backend.key("a/b/0.jpg"), b"x", content_type="image/jpeg"))
    for missing in ("nope/0.jpg", "a/b", "a", "a/b/0.jp", "a/b/0.jpg/more"):
        key = backend.key(missing)
        assert backend.run(backend.store.get(key)) is None, missing
        assert backend.run(backend.store.open(key)) is None, missing
        assert backend.run(backend.store.exists(key)) is False, missing


INVALID_KEYS = [
    "",
    "/etc/passwd",
    "../escape.jpg",
    "a/../../escape.jpg",
    "a/./b.jpg",
    "a//b.jpg",
    "a/b/",
    ".hidden.jpg",
    "a/.meta-b.jpg",
    "a\\b.jpg",
    "a\x00b.jpg",
    "line\nbreak.jpg",
    "k" * 1025,
]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused_by_every_method(backend: Backend, key: str) -> None:
    store = backend.store
    calls = [
        store.put(key, b"x", content_type="image/jpeg"),
        store.get(key),
        store.open(key),
        store.exists(key),
        store.presigned_url(key, expires_in=60),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            backend.run(call)


@pytest.mark.parametrize("prefix", ["", "/", "a", "../", "a/../", "/abs/", ".meta/"])
def test_invalid_prefixes_are_refused(backend: Backend, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        backend.run(backend.store.delete_prefix(prefix))


def test_delete_prefix_removes_one_folder_and_nothing_beside_it(backend: Backend) -> None:
    store = backend.store
    kept = [backend.key("r10/1/0.jpg"), backend.key("r1.jpg"), backend.key("r2/1/0.jpg")]
    gone = [backend.key("r1/1/0.jpg"), backend.key("r1/1/1.jpg"), backend.key("r1/2/0.jpg")]
    for key in kept + gone:
        backend.run(store.put(key, key.encode(), content_type="image/jpeg"))

    assert backend.run(store.delete_prefix(backend.key("r1/"))) == 3
    assert [backend.run(store.exists(key)) for key in gone] == [False] * 3
    assert [backend.run(store.get(key)) for key in kept] == [key.encode() for key in kept]
    # Deleting again, or a folder that never existed, is not an error.
    assert backend.run(store.delete_prefix(backend.key("r1/"))) == 0
    assert backend.run(store.delete_prefix(backend.key("never/"))) == 0


def test_large_objects_stream_in_chunks(backend: Backend) -> None:
    key = backend.key("large.bin")
    data = os.urandom(12 * 1024 * 1024)
    backend.run(backend.store.put(key, data, content_type="application/octet-stream"))
    stored = backend.run(backend.store.open(key))
    assert stored is not None
    assert stored.size == len(data)
    chunks = backend.read(stored)
    # Served as it is read, never as one 12 MB buffer.
    assert len(chunks) >= 4
    assert max(len(chunk) for chunk in chunks) <= 4 * 1024 * 1024
    assert b"".join(chunks) == data


def test_presigned_urls_serve_the_object_where_the_store_can_make_them(backend: Backend) -> None:
    key = backend.key("1/0.jpg")
    backend.run(
        backend.store.put(
            key, b"\xff\xd8\xffsigned", content_type="image/jpeg", cache_control=IMMUTABLE
        )
    )
    url = backend.run(backend.store.presigned_url(key, expires_in=60))
    if backend.name == "local":
        assert url is None  # a disk has no URL: /media streams it instead
        return
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"\xff\xd8\xffsigned"
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == IMMUTABLE
    # The signature is what lets it in: the same URL without it is refused.
    assert httpx.get(url.split("?", 1)[0]).status_code == 403


def test_temporary_objects_are_stored_but_never_presigned(backend: Backend) -> None:
    # Originals of single-image jobs (tmp/...) live in the same store and are never handed out.
    key = f"tmp/{backend.prefix}original"
    backend.run(backend.store.put(key, b"original", content_type="application/octet-stream"))
    try:
        assert backend.run(backend.store.get(key)) == b"original"
        with pytest.raises(InvalidKey):
            backend.run(backend.store.presigned_url(key, expires_in=60))
    finally:
        backend.run(backend.store.delete_prefix(f"tmp/{backend.prefix}"))
