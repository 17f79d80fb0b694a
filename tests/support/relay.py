"""A TCP relay on 127.0.0.1 in front of an HTTP server: what reaches the server passes through
it byte for byte, so a test sees every request head as the server receives it and can cut the
connections that carry an event stream, the way a proxy restart or a network drop does.

    with Relay(api_port) as relay:
        page.goto(relay.url)
        ...
        last_id = relay.cut_event_streams()
        wait_until(lambda: relay.resumed_with(last_id))

Nothing is parsed beyond what that needs: request heads (the body of a request with a
``Content-Length`` is skipped) and the ``id:`` of each whole event in an event stream's answer
(sse-starlette ends every event with a blank ``\r\n`` line).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Self

from imgbatch.cli.embedded import Managed

__all__ = ["Relay", "RequestHead"]

_EVENT_ID = re.compile(rb"^id: ?(.*?)\r?$", re.MULTILINE)


@dataclass(frozen=True)
class RequestHead:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case

    @property
    def is_event_stream(self) -> bool:
        return self.path.split("?", 1)[0].endswith("/events")


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket
    current: RequestHead | None = None
    cut: bool = False
    pending: bytes = field(default=b"")  # the end of the answer not yet split into lines
    # Held while an answer's bytes are noted and passed on, and while the connection is cut:
    # an id counts as sent only once the client has been given it.
    sending: threading.Lock = field(default_factory=threading.Lock)


class Relay(Managed):
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self.heads: list[RequestHead] = []
        # The last `id:` the server sent on any event stream, before the client saw it.
        self.last_event_id: str | None = None
        # Every such id, in the order the server sent them.
        self.event_ids: list[str] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name=f"relay:{self.port}", daemon=True).start()

    def start(self) -> Self:
        return self  # relaying since __init__

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                _close(connection)

    # -- what a test uses ------------------------------------------------------------------

    def cut_event_streams(self) -> tuple[int, str | None]:
        """Reset every connection that is carrying an event stream now. Returns how many were
        cut, and the last event id the server had sent before (what a client resumes from)."""
        with self._lock:
            streams = [
                c
                for c in self._connections
                if c.current and c.current.is_event_stream and not c.cut
            ]
        for connection in streams:
            with connection.sending:
                connection.cut = True
                # Closed, not reset: what was sent still arrives (a reset would make the client
                # drop bytes it had not read yet), then the answer ends in the middle of its
                # chunked body, which the client sees as a network error.
                _close(connection)
        with self._lock:
            return len(streams), self.last_event_id

    def event_requests(self) -> list[RequestHead]:
        with self._lock:
            return [head for head in self.heads if head.is_event_stream]

    # -- the relay -------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            connection = _Connection(client, upstream)
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=self._upward, args=(connection,), daemon=True).start()
            threading.Thread(target=self._downward, args=(connection,), daemon=True).start()

    def _upward(self, connection: _Connection) -> None:
        """Client to server, noting each request head; a body is passed on unread."""
        buffer = b""
        body_left = 0
        while data := _receive(connection.client):
            if not _send(connection.upstream, data):
                break
            buffer += data
            while buffer:
                if body_left:
                    skipped = min(body_left, len(buffer))
                    buffer, body_left = buffer[skipped:], body_left - skipped
                    continue
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = _parse_head(buffer[:end])
                buffer = buffer[end + 4 :]
                body_left = int(head.headers.get("content-length", "0") or 0)
                with self._lock:
                    self.heads.append(head)
                    connection.current = head
                    connection.pending = b""
        _close(connection)

    def _downward(self, connection: _Connection) -> None:
        """Server to client, noting the ids of an event stream's events."""
        while data := _receive(connection.upstream):
            with connection.sending:
                if connection.cut or not _send(connection.client, data):
                    break
                head = connection.current
                if head and head.is_event_stream:
                    # Only whole events count: a client acts on an event at its blank line.
                    text = connection.pending + data
                    complete, _, connection.pending = text.rpartition(b"\r\n\r\n")
                    ids = _EVENT_ID.findall(complete)
                    if ids:
                        with self._lock:
                            self.event_ids += [i.decode() for i in ids]
                            self.last_event_id = ids[-1].decode()
        _close(connection)


def _parse_head(raw: bytes) -> RequestHead:
    lines = raw.decode("latin-1").split("\r\n")
    method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RequestHead(method, path, headers)


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(connection: _Connection) -> None:
    for sock in (connection.client, connection.upstream):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
