"""The reconciler against live work: a slow product is never taken from the worker holding it.

A side API, worker and beat run with the lease, the idle time and the reconcile interval scaled
down to seconds, on a database and Redis database of their own.
"""

from __future__ import annotations

import uuid

import httpx

from cli.stack import Stack
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.stacks import own_data, side_api

LEASE = 2.0


def test_a_slow_product_keeps_its_lease_and_is_downloaded_once(
    stack: Stack, origin: Origin
) -> None:
    env = {
        **own_data(stack, 3),
        "IMGBATCH_PRODUCT_LEASE_SECONDS": str(LEASE),
        "IMGBATCH_REQUEST_IDLE_SECONDS": str(LEASE),
        "IMGBATCH_RECONCILE_INTERVAL_SECONDS": "1",
    }
    # Every image takes three leases to arrive: the request looks idle to the reconciler many
    # times over while its worker is alive and waiting.
    token = uuid.uuid4().hex
    paths = {
        serial: [f"/slow/chelsea.jpg?delay={3 * LEASE}&t={token}-{serial}-{i}" for i in range(2)]
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
