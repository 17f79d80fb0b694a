"""GET /api/stats for the caller's key, against the real stack with authentication on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from imgbatch.api.stats import window_count
from imgbatch.cli.keys import create_key
from imgbatch.cli.stack import Stack
from imgbatch.models.activity import ActivityMinute
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.stacks import side_api


@pytest.fixture(scope="module")
def secure_url(stack: Stack) -> Iterator[str]:
    with side_api(stack, "api-stats", {"IMGBATCH_AUTH_DISABLED": "false"}) as url:
        yield url


def keyed(stack: Stack, url: str, name: str) -> httpx.Client:
    _, key = asyncio.run(create_key(stack.settings_for_children(), name))
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_stats_show_the_keys_own_work(stack: Stack, secure_url: str, origin: Origin) -> None:
    with keyed(stack, secure_url, "stats-a") as a, keyed(stack, secure_url, "stats-b") as b:
        empty = b.get("/api/stats")
        assert empty.status_code == 200, empty.text
        assert empty.json()["requests"]["completed"] == 0
        assert empty.json()["images_done"] == {"last_1m": 0, "last_5m": 0, "last_15m": 0}

        slow = upload(a, sheet([(1, "Slow", origin.url("/slow/chelsea.jpg?delay=6"))]))
        rows = [
            (i, f"P{i}", f"{origin.url('/img/rocket.jpg')},{origin.url('/img/missing.jpg')}")
            for i in range(1, 6)
        ]
        batch = upload(a, sheet([*rows, (6, "Odd", origin.url("/img/not_an_image.jpg"))]))
        assert slow.status_code == batch.status_code == 202
        done = wait_for_status(a, batch.json()["request_id"])
        assert (done["images_done"], done["images_failed"]) == (5, 6)

        during = a.get("/api/stats").json()
        assert during["requests"]["in_progress"] == 1  # the slow one
        assert during["requests"]["completed"] == 1
        assert during["oldest_in_progress_age_seconds"] > 0
        assert during["oldest_pending_age_seconds"] is None
        wait_for_status(a, slow.json()["request_id"])

        stats = a.get("/api/stats").json()
        assert stats["requests"] == {
            "pending": 0,
            "in_progress": 0,
            "completed": 2,
            "failed": 0,
            "cancelled": 0,
            "expired": 0,
        }
        # Everything happened in the last few minutes: whole in the 5 and 15 minute windows.
        assert stats["images_done"]["last_5m"] == stats["images_done"]["last_15m"] == 6
        assert 0 < stats["images_done"]["last_1m"] <= 6
        assert 0 < stats["images_per_second"] <= 6 / 60 + 1e-9
        assert stats["failures_24h"] == {"http_error": 5, "not_an_image": 1}
        assert stats["oldest_in_progress_age_seconds"] is None
        assert stats["workers_alive"] >= 1
        assert any(name.startswith("worker-") for name in stats["workers"])
        assert set(stats["queues"]) >= {"imgbatch.images", "imgbatch.dispatch"}
        assert all(depth >= 0 for depth in stats["queues"].values())

        # Another key sees none of it.
        other = b.get("/api/stats").json()
        assert other["requests"]["completed"] == 0
        assert other["failures_24h"] == {}
        assert other["images_done"]["last_15m"] == 0
    assert httpx.get(f"{secure_url}/api/stats").status_code == 401


def test_the_oldest_minute_of_a_window_counts_in_proportion() -> None:
    at = datetime(2026, 1, 1, 12, 0, 15, tzinfo=UTC)
    minutes = [
        ActivityMinute(minute=at.replace(minute=0, second=0) - timedelta(minutes=1), done=60),
        ActivityMinute(minute=at.replace(second=0), done=10),
    ]
    # The last 60 s: this minute's 15 s whole, and the last 45 s of the minute before.
    assert window_count(minutes, at, 60) == pytest.approx(10 + 45)
    assert window_count(minutes, at, 300) == pytest.approx(70)
    assert window_count(minutes, at, 10) == pytest.approx(10 * 10 / 15)
