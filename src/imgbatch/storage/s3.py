"""Media on S3 or anything that speaks its API (SeaweedFS, MinIO, R2, GCS interop), via obstore.

Why obstore (measured against SeaweedFS on this 2-core machine; the numbers are in
docs/profiles-and-outputs.md, "Media storage"): per 200 KB object it spends 0.7-0.9 ms of
client CPU on a put or a get, against 2.3-2.8 ms for boto3 in threads and 2.3-2.9 ms for
aioboto3; it adds 4-14 MB of RSS to a process instead of 30-45 MB and imports in 10 ms
instead of 0.2 s (every prefork child builds its own store); and it is natively async, so the
event loop never hands a request to a thread. boto3 is used only to create the bucket
(:mod:`storage.buckets`), which obstore cannot.

Credentials come from obstore's own chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
(/``AWS_SESSION_TOKEN``), web identity (EKS), ECS task roles and EC2 instance metadata. Shared
profile files (``~/.aws/credentials``) are not read: export the profile's keys instead
(``aws configure export-credentials --format env``). Routing boto3's chain through obstore
would read them, but costs every process 0.2 s and 24 MB more (measured).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from imgbatch.core.settings import Settings
from imgbatch.storage.base import StorageUnavailable, StoredObject
from imgbatch.storage.keys import check_key, check_prefix, check_public_key

if TYPE_CHECKING:
    from obstore import Attributes, GetOptions
    from obstore.store import S3Config

# A streamed response sends chunks of at least this much; small enough to start sending at
# once, large enough that a 10 MB object is a few dozen writes rather than thousands.
_STREAM_CHUNK = 256 * 1024
# A new bucket's first write waits on SeaweedFS growing a volume (about 1 s, measured).
_TIMEOUT = timedelta(seconds=30)
_RETRY_FOR = timedelta(seconds=10)


def _config(settings: Settings, endpoint: str | None) -> S3Config | None:
    config: S3Config = {}
    if endpoint:
        # Unset: AWS itself (or AWS_ENDPOINT_URL, as any AWS client would read it).
        config["endpoint"] = endpoint
    if settings.s3_sse:
        # obstore sends the x-amz-server-side-encryption headers on every PUT (and copy) it
        # makes, so outputs, result files and originals alike are written encrypted.
        config["server_side_encryption"] = settings.s3_sse
        if settings.s3_sse_kms_key_id:
            config["sse_kms_key_id"] = settings.s3_sse_kms_key_id
    return config or None


@contextlib.contextmanager
def _available() -> Iterator[None]:
    """What obstore raises once its own retries (5xx and connection errors, with backoff) are
    spent becomes :class:`StorageUnavailable`: a store that is down or restarting is an outage,
    not a bug (the API answered 500 for it). A missing key stays ``FileNotFoundError``."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (BaseError, OSError) as exc:
        raise StorageUnavailable() from exc


class S3MediaStore:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> S3MediaStore:
        endpoint = str(settings.s3_endpoint_url).rstrip("/") if settings.s3_endpoint_url else None
        store = S3Store(
            settings.s3_bucket,
            region=settings.s3_region,
            # Path-style requests work on every S3-compatible server; virtual hosts need DNS.
            virtual_hosted_style_request=False,
            # obstore retries 5xx and connection errors itself, by default for up to 3 minutes:
            # an API read would hang that long while the store restarts. A few seconds here;
            # a longer outage is a 503 with Retry-After in the API and a task retry in a worker.
            retry_config={
                "max_retries": 5,
                "retry_timeout": _RETRY_FOR,
                "backoff": {"max_backoff": timedelta(seconds=2)},
            },
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=5),
                "timeout": _TIMEOUT,
            },
            config=_config(settings, endpoint),
        )
        return cls(store)

    async def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        attributes = _attributes(content_type, cache_control)
        # One PUT, never a multipart upload: outputs are a few MB at most, and an aborted
        # multipart upload would leave invisible parts behind in the bucket.
        with _available():
            await obstore.put_async(
                self.store, check_key(key), data, attributes=attributes, use_multipart=False
            )

    async def put_file(
        self, key: str, path: Path, *, content_type: str, cache_control: str | None = None
    ) -> None:
        attributes = _attributes(content_type, cache_control)
        # Multipart above obstore's chunk size: a result file may be hundreds of MB, more than
        # one PUT should carry; parts of an aborted upload are removed by the bucket's
        # lifecycle rule for incomplete uploads (docs: operating).
        with _available():
            await obstore.put_async(self.store, check_key(key), path, attributes=attributes)

    async def get(self, key: str) -> bytes | None:
        try:
            with _available():
                result = await obstore.get_async(self.store, check_key(key))
                return bytes(await result.bytes_async())
        except FileNotFoundError:  # obstore's not-found
            return None

    async def open(
        self, key: str, byte_range: tuple[int, int] | None = None
    ) -> StoredObject | None:
        options: GetOptions = {"range": byte_range} if byte_range else {}
        try:
            with _available():
                result = await obstore.get_async(self.store, check_key(key), options=options)
        except FileNotFoundError:  # obstore's not-found
            return None
        attributes = result.attributes
        return StoredObject(
            key=key,
            size=result.meta["size"],
            content_type=str(attributes.get("Content-Type") or "application/octet-stream"),
            cache_control=attributes.get("Cache-Control"),
            chunks=result.stream(min_chunk_size=_STREAM_CHUNK),
        )

    async def size(self, key: str) -> int | None:
        try:
            with _available():
                return (await obstore.head_async(self.store, check_key(key)))["size"]
        except FileNotFoundError:  # obstore's not-found
            return None

    async def exists(self, key: str) -> bool:
        try:
            with _available():
                await obstore.head_async(self.store, check_key(key))
        except FileNotFoundError:  # obstore's not-found
            return False
        return True

    async def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        # One listing page at a time, deleted in one bulk request (DeleteObjects) per page.
        with _available():
            async for page in obstore.list(self.store, check_prefix(prefix), chunk_size=1000):
                await obstore.delete_async(self.store, [meta["path"] for meta in page])
                deleted += len(page)
        return deleted

    async def presigned_url(self, key: str, *, expires_in: int) -> str:
        return await obstore.sign_async(
            self.store, "GET", check_public_key(key), timedelta(seconds=expires_in)
        )


def _attributes(content_type: str, cache_control: str | None) -> Attributes:
    attributes: Attributes = {"Content-Type": content_type}
    if cache_control:
        attributes["Cache-Control"] = cache_control
    return attributes
