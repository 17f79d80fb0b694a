"""Helpers for the webhook tests: an in-process worker runtime and requests that complete."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import httpx
import pytest
import redis

from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.models.migrations import migrate
from imgbatch.worker.runtime import WorkerRuntime, build_runtime
from tests.support.client import upload, wait_for_status
from tests.support.origin import Origin

RETRY_SCHEDULE = [0, 1, 1]
# The production default: a hanging receiver holds its attempt this long.
WEBHOOK_TIMEOUT = 10.0


class Runtime:
    def __init__(self, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
        assert stack.redis_url
        self._redis_url = stack.redis_url.rsplit("/", 1)[0] + "/5"
        self._base = Settings(
            mongodb_url=stack.mongodb_url,
            mongodb_database=f"hooks_{uuid.uuid4().hex[:8]}",
            redis_url=self._redis_url,
            data_dir=tmp_path_factory.mktemp("hooks-inproc"),
            allow_private_networks=True,
            allowed_ports=[],
            webhook_retry_schedule=list(map(float, RETRY_SCHEDULE)),
            webhook_timeout=WEBHOOK_TIMEOUT,
        )
        self.broker = redis.Redis.from_url(self._redis_url)
        self.broker.flushdb()
        self.rt: WorkerRuntime = build_runtime(self._base)
        self.rt.run(migrate(self.rt.db))

    def configure(self, **overrides: Any) -> WorkerRuntime:
        """The same runtime (database, loop, queue) with some settings changed."""
        self.rt.settings = self._base.model_copy(update=overrides)
        return self.rt

    def queue_length(self, queue: str) -> int:
        return int(self.broker.llen(queue))

    def close(self) -> None:
        self.broker.flushdb()
        rt = self.rt
        rt.run(rt.client.drop_database(self._base.mongodb_database))
        rt.run(rt.client.close())
        rt.loop.close()
        asyncio.set_event_loop(None)


def image_sheet(origin: Origin, products: int = 1) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("S. No.", "Product Name", "Input Image Urls"))
    for serial in range(1, products + 1):
        writer.writerow((serial, f"P{serial}", origin.url(f"/img/chelsea.jpg?{uuid.uuid4().hex}")))
    return buffer.getvalue()


def start_request(
    api: httpx.Client, origin: Origin, *, products: int = 1, webhook_url: str | None = None
) -> dict[str, Any]:
    data = {"webhook_url": webhook_url} if webhook_url else None
    response = upload(api, image_sheet(origin, products), data=data)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def complete_request(
    api: httpx.Client, origin: Origin, *, products: int = 1, webhook_url: str | None = None
) -> dict[str, Any]:
    """Upload a sheet of real images and wait until the request is completed."""
    accepted = start_request(api, origin, products=products, webhook_url=webhook_url)
    status = wait_for_status(api, accepted["request_id"])
    assert status["status"] == "completed", status
    return accepted
