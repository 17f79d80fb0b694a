"""The reconciler against live work (a slow product is never taken from the worker holding
it), and against a year's worth of finished requests (it stays fast)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from imgbatch.cli.embedded import EmbeddedMongo
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.models.migrations import migrate
from imgbatch.models.requests import RequestRecord, RequestStatus, now
from imgbatch.worker.reconcile import reconcile
from imgbatch.worker.retention import expire_requests
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.client import sheet, upload, wait_for_status
from tests.support.inprocess import isolated_runtime
from tests.support.origin import Origin
from tests.support.seeding import COLUMNS
from tests.support.stacks import own_data, side_api

# The default lease: a live run keeps what it holds at the setting users run with.
LEASE = Settings.model_fields["product_lease_seconds"].default


def test_a_slow_product_keeps_its_lease_and_is_downloaded_once(
    stack: Stack, origin: Origin
) -> None:
    # A side API, worker and beat at the default lease and reconcile interval, with the idle
    # time scaled down to seconds, on a database and Redis database of their own.
    env = {
        **own_data(stack, 3),
        "IMGBATCH_REQUEST_IDLE_SECONDS": "1",
        # An origin that is slow, not broken: its answers are waited for.
        "IMGBATCH_DOWNLOAD_READ_TIMEOUT": str(2 * LEASE),
        "IMGBATCH_DOWNLOAD_DEADLINE": str(4 * LEASE),
    }
    # Every image takes longer than a lease to arrive: the request looks idle to the reconciler
    # many times over while its worker is alive and waiting.
    token = uuid.uuid4().hex
    paths = {
        serial: [f"/slow/chelsea.jpg?delay={LEASE + 3}&t={token}-{serial}-{i}" for i in range(2)]
        for serial in (1, 2, 3)
    }
    rows = [(s, f"Slow {s}", ",".join(origin.url(p) for p in ps)) for s, ps in paths.items()]
    with (
        side_api(stack, "api-lease", env, worker_concurrency=2, beat=True) as url,
        httpx.Client(base_url=url, timeout=30) as api,
    ):
        accepted = upload(api, sheet(rows))
        assert accepted.status_code == 202, accepted.text
        status = wait_for_status(api, accepted.json()["request_id"], timeout=90)

    assert status["status"] == "completed"
    assert (status["images_done"], status["images_failed"]) == (6, 0)
    assert [p["errors"] for p in status["products"]] == [[], [], []]
    requested = origin.requests.paths()
    for wanted in paths.values():
        for path in wanted:
            assert requested.count(path) == 1, path


@pytest.fixture
def crowded(stack: Stack, tmp_path: Path) -> Iterator[WorkerRuntime]:
    """A runtime on a MongoDB-protocol server of its own, holding 50,000 finished requests."""
    with (
        EmbeddedMongo(tmp_path / "mongodb") as mongo,
        isolated_runtime(stack, tmp_path / "data", mongodb_url=mongo.url) as rt,
    ):
        _store_finished_requests(rt, 50_000)
        yield rt


def test_periodic_passes_stay_fast_with_50000_finished_requests(crowded: WorkerRuntime) -> None:
    """A year of use leaves many finished requests behind; the reconciler (every 30 s) and the
    retention sweeper must find their few candidates by index, not by reading all of them."""
    rt = crowded
    for one_pass in (reconcile, expire_requests):
        started = time.perf_counter()
        assert rt.run(one_pass(rt)) == 0
        assert time.perf_counter() - started < 1.0, one_pass.__name__


def _store_finished_requests(rt: WorkerRuntime, count: int) -> None:
    rt.run(migrate(rt.db))
    finished_at = now() - timedelta(days=3)
    rt.run(
        rt.db["requests"].insert_many(
            [
                RequestRecord(
                    id=uuid.uuid4().hex,
                    owner="tenant",
                    status=RequestStatus.COMPLETED,
                    columns=COLUMNS,
                    products_total=1,
                    images_total=1,
                    products_done=1,
                    images_done=1,
                    ingested=True,
                    dispatched_at=finished_at,
                    created_at=finished_at,
                    updated_at=finished_at,
                    completed_at=finished_at,
                    completions=1,
                    expires_at=finished_at + timedelta(days=30),
                ).to_document()
                for _ in range(count)
            ],
            ordered=False,
        )
    )
