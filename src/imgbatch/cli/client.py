"""``ImgbatchClient``: the imgbatch HTTP API as a Python object, for the ``imgbatch`` client
commands and for scripts.

It speaks HTTP only (httpx, and httpx-sse for the event stream) and imports nothing of the
server: import-linter keeps it that way, so it works against any imgbatch deployment.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import httpx
from httpx_sse import SSEError, connect_sse

FINAL_STATUSES = ("completed", "failed", "cancelled", "expired")
# A stream sends a comment at least every 15 s; a minute of silence means the connection died.
_STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
# Streams that fail in a row before the client falls back to polling the status endpoint.
_STREAM_FAILURES = 3


class ApiError(Exception):
    """The server answered with an error status; ``detail`` is its JSON ``detail``."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        message = detail.get("message", detail) if isinstance(detail, dict) else detail
        super().__init__(f"{status_code}: {message}")


class RowErrors(ApiError):
    """A 422 for the sheet's rows: ``rows`` holds ``{line, column, reason}`` for each."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.detail.get("errors", [])
        return rows

    @property
    def omitted(self) -> int:
        return int(self.detail.get("omitted_errors", 0))


@dataclass(frozen=True)
class Progress:
    """Where a request stands, from a ``progress``/final event or a status answer."""

    status: str
    images_done: int
    images_failed: int
    images_total: int
    products_done: int = 0
    products_total: int = 0

    @classmethod
    def of(cls, status: str, body: dict[str, Any]) -> Progress:
        return cls(
            status=status,
            images_done=int(body["images_done"]),
            images_failed=int(body["images_failed"]),
            images_total=int(body["images_total"]),
            products_done=int(body.get("products_done", 0)),
            products_total=int(body.get("products_total", 0)),
        )

    @property
    def finished(self) -> int:
        return self.images_done + self.images_failed

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class StreamEvent:
    event: str
    id: str
    data: dict[str, Any]


class ImgbatchClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- calls ---------------------------------------------------------------------------

    def upload(
        self, path: Path, *, profile: str | None = None, webhook_url: str | None = None
    ) -> dict[str, Any]:
        """``POST /api/upload``; raises :class:`RowErrors` for a sheet with invalid rows."""
        data = {"profile": profile, "webhook_url": webhook_url}
        with path.open("rb") as handle:
            response = self._http.post(
                "/api/upload",
                files={"file": (path.name, handle, "text/csv")},
                data={k: v for k, v in data.items() if v},
            )
        return self._json(response)

    def status(self, request_id: str, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        response = self._http.get(
            f"/api/status/{request_id}", params={"offset": offset, "limit": limit}
        )
        return self._json(response)

    def requests(
        self, *, limit: int = 20, offset: int = 0, status: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._json(self._http.get("/api/requests", params=params))

    def retry(self, request_id: str) -> dict[str, Any]:
        """``POST .../retry``: the failed images of a completed request are processed again."""
        return self._json(self._http.post(f"/api/requests/{request_id}/retry"))

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self._json(self._http.post(f"/api/requests/{request_id}/cancel"))

    def delete(self, request_id: str) -> None:
        """``DELETE /api/requests/{id}``: the request, its products and the outputs only it
        held are gone (204); an unknown id raises :class:`ApiError` 404."""
        response = self._http.delete(f"/api/requests/{request_id}")
        if response.status_code != 204:
            self._json(response)

    def download(self, request_id: str, out: Path, *, only_failed: bool = False) -> int:
        """Stream the result CSV (or only its failed rows) to ``out``; returns its size."""
        params = {"only": "failed"} if only_failed else {}
        return self._save(f"/api/download/{request_id}", params, lambda: out.open("wb"))

    def results(self, request_id: str, out: Path | None = None) -> int:
        """Stream every image record (JSON Lines, input order) to ``out``, or to standard
        output; returns the size."""
        path = f"/api/requests/{request_id}/results"
        if out is None:
            return self._save(path, {}, lambda: nullcontext(sys.stdout.buffer))
        return self._save(path, {}, lambda: out.open("wb"))

    def _save(
        self,
        path: str,
        params: dict[str, str],
        sink: Callable[[], AbstractContextManager[BinaryIO]],
    ) -> int:
        """The body of ``GET path`` written to ``sink()``, opened only once the server said
        yes: a refused call leaves no file behind."""
        with self._http.stream("GET", path, params=params) as response:
            if response.is_error:
                response.read()
                self._json(response)
            size = 0
            with sink() as handle:
                for block in response.iter_bytes():
                    handle.write(block)
                    size += len(block)
                handle.flush()
        return size

    def events(self, request_id: str, *, last_event_id: str | None = None) -> Iterator[StreamEvent]:
        """One connection to the event stream, until the server closes it."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with connect_sse(
            self._http,
            "GET",
            f"/api/requests/{request_id}/events",
            headers=headers,
            timeout=_STREAM_TIMEOUT,
        ) as source:
            if source.response.is_error:
                source.response.read()
                self._json(source.response)
            for sse in source.iter_sse():
                if sse.data:  # the opening comment and `retry:` hint carry none
                    yield StreamEvent(sse.event, sse.id, sse.json())

    def watch(self, request_id: str, *, poll_interval: float = 1.0) -> Iterator[Progress]:
        """Progress until a final state: from the event stream, reconnecting with
        Last-Event-ID when a stream ends early; polling status if streams keep failing."""
        last_id: str | None = None
        status = "pending"
        last: Progress | None = None
        failures = 0
        while failures < _STREAM_FAILURES:
            try:
                for event in self.events(request_id, last_event_id=last_id):
                    failures = 0
                    last_id = event.id
                    if event.event == "status":
                        status = str(event.data["status"])
                        if last is not None:  # the counters stand; the status moved
                            last = replace(last, status=status)
                            yield last
                    elif event.event == "progress":
                        last = Progress.of(status, event.data)
                        yield last
                    elif event.event in FINAL_STATUSES:
                        yield Progress.of(event.event, event.data)
                        return
            except (httpx.TransportError, SSEError):
                failures += 1
            except ApiError as error:
                if error.status_code in (401, 403, 410) or _names_request(error, request_id):
                    raise
                failures += 1  # a server without the event stream: poll instead
        yield from self._poll(request_id, poll_interval)

    def _poll(self, request_id: str, interval: float) -> Iterator[Progress]:
        while True:
            body = self.status(request_id, limit=1)
            progress = Progress.of(str(body["status"]), body)
            yield progress
            if progress.is_final:
                return
            time.sleep(interval)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:500]}
        if response.is_success:
            result: dict[str, Any] = body
            return result
        detail = body.get("detail", body) if isinstance(body, dict) else body
        if response.status_code == 422 and isinstance(detail, dict) and "errors" in detail:
            raise RowErrors(response.status_code, detail)
        raise ApiError(response.status_code, detail)


def _names_request(error: ApiError, request_id: str) -> bool:
    """A 404 about this request (it does not exist), not a server without the route."""
    return error.status_code == 404 and request_id in str(error.detail)
