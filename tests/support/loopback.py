"""What the test origin and the webhook receiver share: a threaded HTTP server on 127.0.0.1
that serves from construction until ``stop()`` and counts the TCP connections it accepts."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Any, Self

from imgbatch.cli.embedded import Managed

__all__ = ["CountingServer", "LoopbackServer"]


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: Any, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self._connections_lock = threading.Lock()
        self.connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._connections_lock:
            self.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-body or on a hanging reply is what many tests do on purpose.
        pass


class LoopbackServer(Managed):
    """Serves ``server`` in a daemon thread; a context manager that stops it on exit."""

    def __init__(self, server: CountingServer, name: str) -> None:
        self.stopped = threading.Event()
        self._server = server
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{name}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (keep-alive reuse shows as fewer than requests)."""
        return self._server.connections

    def start(self) -> Self:
        return self  # already serving: the server starts in __init__

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
