"""Download clients side by side: CPU per image download on the bench's photo mix.

One process, one asyncio loop, 24 downloads in flight from the bench's origin (another process,
its latency): the same work a worker's event loop does per image, nothing else. Measured with
``time.thread_time`` around 480 downloads after 48 to warm each client's pool, in rounds that
interleave the clients so a busy moment of the machine falls on all of them alike.

- ``httpx (guarded_client)``: httpx + httpcore, the guarded client the API and webhooks use,
  with the worker's pool limits, through the worker's own ``fetch`` (budget, cap, deadline).
- ``httpx over aiohttp (pinned_client)``: what the worker ships (netguard/aio.py), through the
  same ``fetch``.
- ``aiohttp, bare`` and ``pycurl, bare``: each library alone, with no guard and no ``fetch``,
  the floor a switch could reach.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from imgbatch.netguard import NetworkPolicy, guarded_client
from imgbatch.worker.downloads import DownloadPolicy, download, download_client

_LANES = 24
_WARM = 48
_MEASURED = 480

Fetch = Callable[[str], Awaitable[bytes]]


@dataclass
class ClientCost:
    client: str
    ms_per_download: list[float]  # one per round

    @property
    def median(self) -> float:
        return statistics.median(self.ms_per_download)


async def _lanes(fetch: Fetch, urls: Sequence[str]) -> int:
    queue = list(urls)
    total = 0

    async def lane() -> None:
        nonlocal total
        while queue:
            total += len(await fetch(queue.pop()))

    await asyncio.gather(*(lane() for _ in range(_LANES)))
    return total


async def _measure(fetch: Fetch, urls: Sequence[str]) -> float:
    await _lanes(fetch, urls[:_WARM])
    started = time.thread_time()
    await _lanes(fetch, urls[_WARM:])
    return (time.thread_time() - started) * 1000 / (len(urls) - _WARM)


def _policy() -> DownloadPolicy:
    # The origin is on loopback: the same switch as the bench's stack.
    return DownloadPolicy(network=NetworkPolicy(True, frozenset()))


async def _through_fetch(client: httpx.AsyncClient, urls: Sequence[str]) -> float:
    policy = _policy()
    async with client:
        return await _measure(lambda url: download(client, url, policy), urls)


def _httpx_client() -> httpx.AsyncClient:
    policy = _policy()
    limits = httpx.Limits(
        max_connections=policy.connections, max_keepalive_connections=policy.connections
    )
    return guarded_client(policy.network, timeout=httpx.Timeout(15.0), limits=limits)


async def _aiohttp_bare(urls: Sequence[str]) -> float:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=64, use_dns_cache=False)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, trust_env=False
    ) as session:

        async def one(url: str) -> bytes:
            async with session.get(url, allow_redirects=False) as response:
                return await response.read()

        return await _measure(one, urls)


async def _pycurl_bare(urls: Sequence[str]) -> float:
    """libcurl's multi interface driven by the asyncio loop (its socket and timer callbacks)."""
    import pycurl  # type: ignore[import-not-found]  # bench extra, no stubs

    loop = asyncio.get_running_loop()
    multi = pycurl.CurlMulti()
    waiting: dict[object, asyncio.Future[None]] = {}
    timer: list[asyncio.TimerHandle | None] = [None]
    idle: list[object] = []

    def settle() -> None:
        while True:
            queued, ok, failed = multi.info_read()
            for handle in ok:
                multi.remove_handle(handle)
                waiting.pop(handle).set_result(None)
            for handle, _, message in failed:
                multi.remove_handle(handle)
                waiting.pop(handle).set_exception(OSError(message))
            if not queued:
                return

    def act(fd: int, what: int) -> None:
        multi.socket_action(fd, what)
        settle()

    def on_socket(event: int, fd: int, _multi: object, _data: object) -> None:
        loop.remove_reader(fd)
        loop.remove_writer(fd)
        if event in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            loop.add_reader(fd, act, fd, pycurl.CSELECT_IN)
        if event in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            loop.add_writer(fd, act, fd, pycurl.CSELECT_OUT)

    def on_timer(ms: int) -> None:
        if timer[0] is not None:
            timer[0].cancel()
            timer[0] = None
        if ms >= 0:
            timer[0] = loop.call_later(ms / 1000, act, pycurl.SOCKET_TIMEOUT, 0)

    multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
    multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)

    async def one(url: str) -> bytes:
        handle = idle.pop() if idle else pycurl.Curl()
        chunks: list[bytes] = []
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.WRITEFUNCTION, chunks.append)
        handle.setopt(pycurl.NOPROXY, "*")
        done = loop.create_future()
        waiting[handle] = done
        multi.add_handle(handle)
        act(pycurl.SOCKET_TIMEOUT, 0)
        await done
        idle.append(handle)
        return b"".join(chunks)

    try:
        return await _measure(one, urls)
    finally:
        multi.close()


_CLIENTS: dict[str, Callable[[Sequence[str]], Awaitable[float]]] = {
    "httpx (guarded_client)": lambda urls: _through_fetch(_httpx_client(), urls),
    "httpx over aiohttp (pinned_client), shipped": lambda urls: _through_fetch(
        download_client(_policy()), urls
    ),
    "aiohttp, bare": _aiohttp_bare,
    "pycurl, bare": _pycurl_bare,
}


def compare(base_url: str, photos: Sequence[str], rounds: int = 3) -> list[ClientCost]:
    costs = {name: ClientCost(name, []) for name in _CLIENTS}
    for round_ in range(rounds):
        for index, (name, run) in enumerate(_CLIENTS.items()):
            urls = [
                f"{base_url}/unique/{photos[i % len(photos)]}?client={index}&r={round_}&i={i}"
                for i in range(_WARM + _MEASURED)
            ]
            costs[name].ms_per_download.append(asyncio.run(run(urls)))
    return list(costs.values())
