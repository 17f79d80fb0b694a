"""The local stack behind ``imgbatch run``/``make run``, ``make demo``, the tests and the benchmark.

It starts MongoDB and Redis (embedded ones when no URL is configured) and, for
``IMGBATCH_STORAGE=s3`` with no endpoint, an embedded S3 server (SeaweedFS) with its bucket; then
the API, a Celery worker and Celery beat as child processes, and stops them all, children first,
on exit. It can start any of them again as it was (:meth:`Stack.restart`), which the supervisor
of ``imgbatch run`` and ``imgbatch demo`` does when one dies (cli/supervisor.py).

While it runs, ``<data dir>/stack.json`` names its services, so tools started beside it
(``imgbatch flower``) find the broker of a running ``make run`` without being told. Its
processes share one Prometheus multiprocess directory, ``<data dir>/metrics``, emptied at start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

import httpx
from pydantic import HttpUrl

from imgbatch.cli.embedded import (
    EmbeddedMongo,
    EmbeddedRedis,
    EmbeddedSeaweedFS,
    EmbeddedServer,
    Managed,
    free_port,
    wait_for_port,
)
from imgbatch.core.metrics import prepare_multiprocess_dir
from imgbatch.core.settings import METRICS_DIR_ENV, Settings, child_environment
from imgbatch.domain.taskqueue import (
    ALL_QUEUES,
    PROCESSING_QUEUES,
    WEBHOOKS_QUEUE,
    celery_args,
    worker_args,
)
from imgbatch.storage.buckets import ensure_bucket

_STOP_TIMEOUT = 30.0
WORKER_NICENESS = 10
STACK_FILE = "stack.json"


class Stack(Managed):
    def __init__(
        self,
        settings: Settings,
        *,
        data_dir: Path | None = None,
        api_port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = (data_dir or settings.data_dir).resolve()
        self.api_port = api_port or settings.port
        self.extra_env = extra_env or {}
        self.services: list[EmbeddedServer] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # How each process was started, to start it again the same way (same port, same data).
        self._spawners: dict[str, Callable[[], subprocess.Popen[bytes]]] = {}
        self._groups: set[str] = set()
        self._logs: dict[str, IO[bytes]] = {}
        self.mongodb_url = settings.mongodb_url
        self.redis_url = settings.redis_url
        self.s3_endpoint_url = str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
        # The embedded S3 server's credentials, handed to children as the standard variables.
        self.s3_credentials: dict[str, str] = {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def public_base_url(self) -> str:
        configured = self.extra_env.get("IMGBATCH_PUBLIC_BASE_URL")
        return configured or f"http://{self.settings.host}:{self.api_port}"

    @property
    def metrics_dir(self) -> Path:
        return self.data_dir / "metrics"

    def env(self) -> dict[str, str]:
        assert self.mongodb_url and self.redis_url, "start the data services first"
        return child_environment(
            {
                "IMGBATCH_MONGODB_URL": self.mongodb_url,
                "IMGBATCH_REDIS_URL": self.redis_url,
                "IMGBATCH_DATA_DIR": str(self.data_dir),
                "IMGBATCH_PUBLIC_BASE_URL": self.public_base_url,
                # Every process of the stack counts into one directory; GET /metrics sums it.
                METRICS_DIR_ENV: str(self.metrics_dir),
                **self._storage_env(),
                **self.extra_env,
            }
        )

    def _storage_env(self) -> dict[str, str]:
        settings = self.settings
        if settings.storage != "s3":
            return {"IMGBATCH_STORAGE": settings.storage}
        endpoint = (
            {"IMGBATCH_S3_ENDPOINT_URL": self.s3_endpoint_url} if self.s3_endpoint_url else {}
        )
        return {
            "IMGBATCH_STORAGE": "s3",
            "IMGBATCH_S3_BUCKET": settings.s3_bucket,
            "IMGBATCH_S3_REGION": settings.s3_region,
            **endpoint,
            **self.s3_credentials,
        }

    def settings_for_children(self) -> Settings:
        """The settings the stack's processes run with, for talking to its services in-process."""
        return self.settings.model_copy(
            update={
                "mongodb_url": self.mongodb_url,
                "redis_url": self.redis_url,
                "s3_endpoint_url": HttpUrl(self.s3_endpoint_url) if self.s3_endpoint_url else None,
            }
        )

    def start_services(self) -> None:
        # Emptied before any process starts: an earlier run's counters would be summed in.
        prepare_multiprocess_dir(self.metrics_dir)
        if not self.mongodb_url:
            mongo = EmbeddedMongo(self.data_dir / "mongodb").start()
            self.services.append(mongo)
            self.mongodb_url = mongo.url
        if not self.redis_url:
            redis = EmbeddedRedis(self.data_dir / "redis").start()
            self.services.append(redis)
            self.redis_url = redis.url
        if self.settings.storage == "s3" and not self.s3_endpoint_url:
            seaweedfs = EmbeddedSeaweedFS(self.data_dir / "seaweedfs").start()
            self.services.append(seaweedfs)
            self.s3_endpoint_url = seaweedfs.url
            self.s3_credentials = seaweedfs.credentials_env()
            ensure_bucket(
                self.settings_for_children(),
                access_key=seaweedfs.access_key,
                secret_key=seaweedfs.secret_key,
            )
        self._write_stack_file()

    def _write_stack_file(self) -> None:
        # Owner-only: a configured URL may carry a password.
        path = self.data_dir / STACK_FILE
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {
                    "pid": os.getpid(),
                    "api_url": self.api_url,
                    "mongodb_url": self.mongodb_url,
                    "redis_url": self.redis_url,
                },
                handle,
            )

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        niceness: int = 0,
        cwd: Path | None = None,
        own_group: bool = False,
    ) -> subprocess.Popen[bytes]:
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        previous = self._logs.pop(name, None)
        if previous is not None:
            previous.close()
        self._logs[name] = handle
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**self.env(), **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            # A process group of its own: it and its children can be signalled as one.
            process_group=0 if own_group else None,
            # os.nice runs in the child between fork and exec: only that process is demoted.
            preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
        )
        self.processes[name] = process
        self._spawners[name] = functools.partial(
            self.spawn, name, args, env, niceness=niceness, cwd=cwd, own_group=own_group
        )
        if own_group:
            self._groups.add(name)
        return process

    def log_path(self, name: str) -> Path:
        """Where a process or an embedded server of the stack writes its output."""
        service = self._service(name)
        return service.log_path if service else self.data_dir / "logs" / f"{name}.log"

    def _service(self, name: str) -> EmbeddedServer | None:
        return next((service for service in self.services if service.name == name), None)

    def exited(self) -> dict[str, int]:
        """The processes and embedded servers that have ended, by name, with their exit codes."""
        ended = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                ended[service.name] = service.process.returncode
        return ended

    def restart(self, name: str) -> None:
        """Start an ended process or embedded server again, exactly as it was started."""
        service = self._service(name)
        if service is not None:
            service.restart()
            return
        self._kill_group_leftovers(name)
        self._spawners[name]()

    def _kill_group_leftovers(self, name: str) -> None:
        # A worker killed alone may leave processes behind, still holding tasks that the broker
        # will hand out again: they must not finish them beside the new worker. (On Linux,
        # Celery's pool processes get SIGKILL when their parent dies; elsewhere, and for
        # anything a task started, nothing else ends them.)
        if name in self._groups and name in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.processes[name].pid, signal.SIGKILL)

    def start_api(
        self,
        name: str = "api",
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        host: str | None = None,
        own_group: bool = False,
    ) -> subprocess.Popen[bytes]:
        port = port or self.api_port
        process = self.spawn(
            name,
            [
                "-m",
                "uvicorn",
                "imgbatch.api.main:app",
                "--host",
                host or self.settings.host,
                "--port",
                str(port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "20",
            ],
            env,
            own_group=own_group,
        )
        wait_for_port(port, process=process)
        return process

    def start_worker(
        self,
        name: str = "worker",
        *,
        concurrency: int | None = None,
        queues: tuple[str, ...] = ALL_QUEUES,
        env: dict[str, str] | None = None,
        pool: str = "prefork",
        cwd: Path | None = None,
        own_group: bool = False,
    ) -> subprocess.Popen[bytes]:
        return self.spawn(
            name,
            [
                *worker_args(
                    queues,
                    pool,
                    concurrency or self.settings.worker_concurrency,
                    self.settings.log_level,
                ),
                "--hostname",
                f"{name}-{free_port()}@%h",
            ],
            env,
            cwd=cwd,
            own_group=own_group,
            # Batch work yields the CPU to the API and the database when a box is shared, so
            # status polls stay fast while a big batch saturates every core.
            niceness=WORKER_NICENESS,
        )

    def start_webhook_worker(
        self,
        name: str = "worker-webhooks",
        *,
        env: dict[str, str] | None = None,
        own_group: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Webhook attempts wait on the network (up to WEBHOOK_TIMEOUT each), so this worker
        runs threads, and a receiver that hangs holds a thread, not a process."""
        return self.start_worker(
            name,
            concurrency=self.settings.webhook_worker_concurrency,
            queues=(WEBHOOKS_QUEUE,),
            env=env,
            pool="threads",
            own_group=own_group,
        )

    def start_beat(
        self, name: str = "beat", *, env: dict[str, str] | None = None, own_group: bool = False
    ) -> subprocess.Popen[bytes]:
        return self.spawn(
            name,
            celery_args(
                "beat",
                "--schedule",
                str(self.data_dir / f"celery{name}-schedule"),
                "--loglevel",
                self.settings.log_level,
            ),
            env,
            own_group=own_group,
        )

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_services()
            # Each in a process group of its own: a Ctrl-C at the terminal reaches only the
            # supervisor, which stops them in order, and a worker's group can be killed whole.
            self.start_api(own_group=True)
            self.start_worker(queues=PROCESSING_QUEUES, own_group=True)
            self.start_webhook_worker(own_group=True)
            self.start_beat(own_group=True)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    # Two minutes: on a busy two-core machine the API starts beside the embedded servers and
    # the workers, and a minute was seen to run out (the stack then stopped before it was up).
    def wait_healthy(self, timeout: float = 120.0, *, api_url: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                url = f"{api_url or self.api_url}/api/health"
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the API at {self.api_url} did not become healthy in {timeout}s")

    def stop_process(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None and process.poll() is None:
            process.terminate()  # Celery's warm shutdown: finish or requeue what it holds
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._kill_group_leftovers(name)
        self.processes.pop(name, None)
        self._spawners.pop(name, None)
        self._groups.discard(name)

    def stop(self) -> None:
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)
        for name in list(self.processes):
            self.stop_process(name)
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        for handle in self._logs.values():
            handle.close()
        self._logs.clear()
