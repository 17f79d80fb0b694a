"""A real webhook receiver on 127.0.0.1, recording everything it is sent.

    with Receiver() as receiver:
        receiver.script("/hook", [500, 500, 200])
        ... point a subscriber at receiver.url("/hook") ...
        arrivals = receiver.wait_for(3, "/hook")

Every request's method, path, headers (lower-cased names) and raw body are kept in arrival
order. Each path answers from its script, one entry per request, and 200 once the script is
used up. An entry is a status code or a :class:`Reply` (extra headers, or ``hang``: hold the
request until the receiver stops, like a receiver that never answers). ``connections`` counts
accepted TCP connections, so a test can prove that nothing connected at all.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import CountingServer, LoopbackServer

__all__ = ["Arrival", "Receiver", "Reply"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Arrival:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the body had been read


class _Server(CountingServer):
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        receiver._record(
            Arrival(
                method=self.command,
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                at=time.monotonic(),
            )
        )
        reply = receiver._next_reply(path)
        if reply.hang:
            receiver.stopped.wait(120)
            self.close_connection = True
            return
        payload = b"ok\n"
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class Receiver(LoopbackServer):
    """A running receiver; a context manager that stops it on exit."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Condition()
        self._arrivals: list[Arrival] = []
        self._scripts: defaultdict[str, deque[Reply]] = defaultdict(deque)
        server = _Server(_Handler, port)
        server.receiver = self
        super().__init__(server, "receiver")

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, replies: Iterable[int | Reply]) -> None:
        with self._lock:
            self._scripts[path].extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def arrivals(self, path: str | None = None) -> list[Arrival]:
        with self._lock:
            return [a for a in self._arrivals if path is None or a.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 60.0) -> list[Arrival]:
        """At least ``count`` arrivals (on ``path``); fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [a for a in self._arrivals if path is None or a.path == path]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(found)} of {count} arrivals on {path} in {timeout}s"
                    )
                self._lock.wait(remaining)

    def _record(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)
            self._lock.notify_all()

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            script = self._scripts[path]
            return script.popleft() if script else Reply()
