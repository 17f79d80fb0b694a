"""The per-process download budget: whole reservations, first come first served, and a download
that reserves its body before reading it and gives it back on every path."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from imgbatch.core.errors import ImageFailure
from imgbatch.worker.budget import DownloadBudget
from imgbatch.worker.downloads import download, download_client
from tests.conftest import CORPUS
from tests.support.origin import Origin
from tests.worker.test_downloads import POLICY

CHELSEA = (CORPUS / "chelsea.jpg").read_bytes()


async def _settle() -> None:
    # Lets every task that can run, run: a turn of the loop, not a timed wait.
    for _ in range(5):
        await asyncio.sleep(0)


def test_reservations_wait_in_order_and_go_when_bytes_come_back() -> None:
    async def scenario() -> None:
        budget = DownloadBudget(100)
        first, second, third = budget.lease(), budget.lease(), budget.lease()
        await first.reserve(60)
        waiting_second = asyncio.create_task(second.reserve(60))
        # 30 would fit, but it came after 60: a large body is never starved by small ones.
        waiting_third = asyncio.create_task(third.reserve(30))
        await _settle()
        assert (waiting_second.done(), waiting_third.done(), budget.held) == (False, False, 60)

        first.trim(50)  # a body that turned out smaller gives the rest back
        await _settle()
        assert (waiting_second.done(), budget.held) == (False, 50)

        first.release()
        await _settle()
        assert waiting_second.done() and waiting_third.done()
        assert (second.held, third.held, budget.held) == (60, 30, 90)

    asyncio.run(scenario())


def test_a_body_larger_than_the_budget_goes_alone() -> None:
    async def scenario() -> None:
        budget = DownloadBudget(100)
        huge, small = budget.lease(), budget.lease()
        await huge.reserve(250)  # nothing else held: granted rather than never
        waiting = asyncio.create_task(small.reserve(10))
        await _settle()
        assert not waiting.done()
        huge.release()
        await _settle()
        assert waiting.done()
        assert budget.held == 10

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_one_in() -> None:
    async def scenario() -> None:
        budget = DownloadBudget(100)
        holder, big, small = budget.lease(), budget.lease(), budget.lease()
        await holder.reserve(50)
        waiting_big = asyncio.create_task(big.reserve(80))
        waiting_small = asyncio.create_task(small.reserve(40))
        await _settle()
        waiting_big.cancel()
        await _settle()
        assert waiting_big.cancelled()
        assert waiting_small.done()
        assert (big.held, budget.held) == (0, 90)

    asyncio.run(scenario())


def _download(origin: Origin, path: str, budget: DownloadBudget) -> tuple[bytes | None, int, int]:
    """(body or None on failure, the lease's bytes after, the budget's bytes after)."""

    async def run() -> tuple[bytes | None, int, int]:
        lease = budget.lease()
        async with download_client(POLICY) as client:
            try:
                body: bytes | None = await download(client, origin.url(path), POLICY, lease)
            except ImageFailure:
                body = None
        return body, lease.held, budget.held

    return asyncio.run(run())


@pytest.mark.parametrize("route", ["/img/chelsea.jpg", "/chunked/chelsea.jpg"])
def test_a_downloaded_body_stays_reserved_at_its_size(origin: Origin, route: str) -> None:
    # Chunked: the cap is reserved before the body, and trimmed to the body once it is read.
    assert _download(origin, route, DownloadBudget(POLICY.max_bytes)) == (
        CHELSEA,
        len(CHELSEA),
        len(CHELSEA),
    )


@pytest.mark.parametrize("route", ["/status/404", "/status/503", f"/huge?claim={10**9}"])
def test_a_failed_download_gives_its_bytes_back(origin: Origin, route: str) -> None:
    assert _download(origin, route, DownloadBudget(10**6)) == (None, 0, 0)


def test_waiting_for_the_budget_does_not_count_against_the_deadline(origin: Origin) -> None:
    policy = dataclasses.replace(POLICY, deadline=1.0, attempts=1)

    async def run() -> bytes:
        budget = DownloadBudget(len(CHELSEA))
        other = budget.lease()
        await other.reserve(len(CHELSEA))
        # Held for twice the deadline by another image; the download's own time is tiny.
        asyncio.get_running_loop().call_later(2 * policy.deadline, other.release)
        async with download_client(policy) as client:
            return await download(client, origin.url("/img/chelsea.jpg"), policy, budget.lease())

    assert asyncio.run(run()) == CHELSEA
