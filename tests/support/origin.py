"""A real HTTP/1.1 image origin on 127.0.0.1, for tests, end-to-end runs and benchmarks.

    with Origin(CORPUS) as origin:
        url = origin.url("/img/chelsea.jpg")
        ...
        assert list(origin.requests) == ["/img/chelsea.jpg"]

stdlib ``ThreadingHTTPServer`` in a daemon thread: one daemon thread per connection, a large
listen backlog, keep-alive (HTTP/1.1), so a few hundred concurrent connections are fine.

Routes (``<name>`` is a file under ``root``, or a body given to :meth:`Origin.put`; query
parameters as shown):

``/img/<name>``
    The file, always ``Content-Type: image/jpeg`` whatever it really is (content sniffing must
    not trust it). Applies ``latency`` (± ``latency_jitter``) before the headers and
    ``bandwidth`` (bytes/second, per connection) to the body.
``/unique/<name>?...``
    As ``/img/``, with the request path appended after the image's end: different bytes (and
    sha256) for every distinct path, the same bytes each time for the same path. Decoders
    ignore what follows an image's end marker.

Every file route sends ``ETag`` (a digest of the bytes) and ``Last-Modified`` (the file's
mtime) and honours ``If-None-Match`` / ``If-Modified-Since`` with ``304 Not Modified``; the
304s are recorded in :attr:`Origin.not_modified`.
``/status/<code>[?retry_after=N]``
    Answers ``<code>`` with a short text body; ``retry_after`` adds ``Retry-After: N``.
``/flaky/<key>/<n>/<name>``
    The first ``n`` requests for ``key`` get 503; after that the file. Counters are per key,
    so use a fresh key per test.
``/redirect?to=<url-encoded url>[&code=302]``
    Redirects to ``to`` with the given status (301/302/303/307/308).
``/redirect-chain/<n>/<name>``
    ``n`` relative 302 hops, then the file.
``/slow/<name>?delay=S``
    Waits ``S`` seconds before sending anything, then the file.
``/gate/<key>/<name>``
    Holds the response until the test calls :meth:`Origin.open_gate` with ``key`` (at most
    60 s), then sends the file: a test decides when an image finishes.
``/trickle/<name>?interval=S``
    Full ``Content-Length`` up front, then one byte every ``S`` seconds (stops when the client
    goes away).
``/huge?claim=N``
    ``Content-Length: N`` and zeros streamed until N bytes or the client hangs up.
``/chunked/<name>``
    The file with ``Transfer-Encoding: chunked`` and no ``Content-Length``.
``/gzip/<name>``
    The file gzip-compressed with ``Content-Encoding: gzip`` whatever the client accepted (a
    misconfigured server).

Every request's path (with query string) and headers are recorded in :attr:`Origin.requests`.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import CountingServer, LoopbackServer

__all__ = ["Origin", "RequestLog"]

_CHUNK = 64 * 1024
_GATE_TIMEOUT = 60.0
_ZEROS = bytes(_CHUNK)


class RequestLog:
    """Thread-safe log of received requests; iterating yields the paths (query included)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[str, dict[str, str]]] = []

    def append(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._entries.append((path, headers))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self._entries]

    def headers(self, index: int = -1) -> dict[str, str]:
        """Headers (lower-cased names) of the ``index``-th request."""
        with self._lock:
            return dict(self._entries[index][1])

    def count(self, prefix: str = "") -> int:
        return sum(1 for path in self.paths() if path.startswith(prefix))

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"RequestLog({self.paths()!r})"


class _Server(CountingServer):
    request_queue_size = 1024
    origin: Origin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------------

    @property
    def origin(self) -> Origin:
        return self.server.origin

    def do_GET(self) -> None:
        origin = self.origin
        origin.requests.append(self.path, {k.lower(): v for k, v in self.headers.items()})
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = [p for p in split.path.split("/") if p]
        try:
            self._route(parts, query)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _route(self, parts: list[str], query: dict[str, str]) -> None:
        head, rest = (parts[0], parts[1:]) if parts else ("", [])
        if head == "img" and len(rest) == 1:
            self._sleep(self.origin.pick_latency())
            self._send_file(rest[0], throttle=True)
        elif head == "unique" and len(rest) == 1:
            self._sleep(self.origin.pick_latency())
            self._send_file(rest[0], throttle=True, suffix=b"\n" + self.path.encode())
        elif head == "status" and len(rest) == 1 and rest[0].isdigit():
            extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send_text(int(rest[0]), f"status {rest[0]}\n", extra)
        elif head == "flaky" and len(rest) == 3 and rest[1].isdigit():
            if self.origin.count_hit(rest[0]) <= int(rest[1]):
                self._send_text(503, "flaky\n")
            else:
                self._send_file(rest[2])
        elif head == "redirect":
            self._redirect(query.get("to", "/"), int(query.get("code", "302")))
        elif head == "redirect-chain" and len(rest) == 2 and rest[0].isdigit():
            hops = int(rest[0])
            if hops > 0:
                self._redirect(f"/redirect-chain/{hops - 1}/{rest[1]}", 302)
            else:
                self._send_file(rest[1])
        elif head == "slow" and len(rest) == 1:
            self._sleep(float(query.get("delay", "1")))
            self._send_file(rest[0])
        elif head == "gate" and len(rest) == 2:
            self.origin.gate(rest[0]).wait(_GATE_TIMEOUT)
            self._send_file(rest[1])
        elif head == "trickle" and len(rest) == 1:
            self._trickle(rest[0], float(query.get("interval", "0.5")))
        elif head == "huge":
            self._huge(int(query.get("claim", str(1 << 30))))
        elif head == "chunked" and len(rest) == 1:
            self._chunked(rest[0])
        elif head == "gzip" and len(rest) == 1:
            self._gzip(rest[0])
        else:
            self._send_text(404, "no such route\n")

    # -- responses -----------------------------------------------------------------------

    def _read(self, name: str) -> bytes | None:
        generated = self.origin.generated.get(name)
        if generated is not None:
            return generated
        root = self.origin.root
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path.read_bytes()

    def _mtime(self, name: str) -> int:
        """Last-Modified of a file route: the file's mtime, or when a generated body was put."""
        put_at = self.origin.generated_at.get(name)
        if put_at is not None:
            return put_at
        return int((self.origin.root / name).stat().st_mtime)

    def _send_text(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        # 1xx, 204 and 304 have no content (RFC 9110): a body after one is not this status but
        # a framing error, which the next parse on the connection would trip over.
        body = b"" if status < 200 or status in (204, 304) else text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str, code: int) -> None:
        self.send_response(code)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, name: str, *, throttle: bool = False, suffix: bytes = b"") -> None:
        data = self._read(name)
        if data is None:
            self._send_text(404, "no such file\n")
            return
        data += suffix
        etag = f'"{hashlib.sha256(data).hexdigest()[:20]}"'
        mtime = self._mtime(name)
        if self._not_modified(etag, mtime):
            self.origin.not_modified.append(self.path, dict(self.headers.items()))
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(mtime, usegmt=True))
        self.end_headers()
        bandwidth = self.origin.bandwidth if throttle else None
        if not bandwidth:
            self.wfile.write(data)
            return
        step = max(1, bandwidth // 20)  # ~20 writes per second keeps the rate smooth
        for start in range(0, len(data), step):
            self.wfile.write(data[start : start + step])
            self.wfile.flush()
            time.sleep(step / bandwidth)

    def _not_modified(self, etag: str, mtime: int) -> bool:
        """RFC 9110 13.2.2: If-None-Match wins; If-Modified-Since only without it."""
        match = self.headers.get("If-None-Match")
        if match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
            return "*" in tags or etag in tags
        since = self.headers.get("If-Modified-Since")
        if since is None:
            return False
        try:
            return mtime <= parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError):
            return False

    def _trickle(self, name: str, interval: float) -> None:
        data = self._read(name)
        if data is None:
            self._send_text(404, "no such file\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        for index in range(len(data)):
            if self.origin.stopped.is_set():
                break
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            self._sleep(interval)
        self.close_connection = True

    def _huge(self, claim: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(claim))
        self.end_headers()
        remaining = claim
        while remaining > 0 and not self.origin.stopped.is_set():
            piece = _ZEROS[: min(_CHUNK, remaining)]
            self.wfile.write(piece)
            remaining -= len(piece)

    def _chunked(self, name: str) -> None:
        data = self._read(name)
        if data is None:
            self._send_text(404, "no such file\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(data), 8192):
            piece = data[start : start + 8192]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _gzip(self, name: str) -> None:
        data = self._read(name)
        if data is None:
            self._send_text(404, "no such file\n")
            return
        body = gzip.compress(data)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _sleep(self, seconds: float) -> None:
        # Wakes early on stop() so a test run does not wait for a long trickle to finish.
        if seconds > 0:
            self.origin.stopped.wait(seconds)


class Origin(LoopbackServer):
    """A running origin; also a context manager (``stop()`` on exit)."""

    def __init__(
        self,
        root: Path,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        bandwidth: int | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.bandwidth = bandwidth
        self.requests = RequestLog()
        # Conditional requests answered 304 (the path and headers of each).
        self.not_modified = RequestLog()
        # Bodies made by a test (a 20 MB image, a crafted file), served like files in root.
        self.generated: dict[str, bytes] = {}
        self.generated_at: dict[str, int] = {}
        self._hits: defaultdict[str, int] = defaultdict(int)
        self._hits_lock = threading.Lock()
        self._gates: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        server = _Server(_Handler)
        server.origin = self
        super().__init__(server, "origin")
        self.base_url = f"http://127.0.0.1:{self.port}"

    def put(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``<name>`` on every route that serves a file; returns its /img URL."""
        self.generated[name] = data
        self.generated_at[name] = int(time.time())
        return self.url(f"/img/{name}")

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else f"/{path}")

    def pick_latency(self) -> float:
        if not self.latency and not self.latency_jitter:
            return 0.0
        jitter = random.uniform(-self.latency_jitter, self.latency_jitter)
        return max(0.0, self.latency + jitter)

    def gate(self, key: str) -> threading.Event:
        with self._hits_lock:
            return self._gates[key]

    def open_gate(self, key: str) -> None:
        """Let every held and future ``/gate/<key>/...`` request through."""
        self.gate(key).set()

    def count_hit(self, key: str) -> int:
        """Increment and return the per-key counter (1 on the first request)."""
        with self._hits_lock:
            self._hits[key] += 1
            return self._hits[key]
