"""``imgbatch run`` restarts what dies: every kind of child, SIGKILLed, comes back on its port
and over its data, the stack keeps serving, and the restart is logged and counted; a child that
cannot start stops the stack with one message; SIGTERM still leaves nothing running."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest
import redis

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import STACK_FILE
from imgbatch.core.settings import child_environment
from tests.conftest import STACK_ENV
from tests.support.client import sheet, upload, wait_for_status
from tests.support.logs import JSON_LOGS, log_events
from tests.support.origin import Origin
from tests.support.stacks import sigterm_and_wait
from tests.support.waiting import wait_until


def _webhooks(cmd: list[str]) -> bool:
    return any(arg.startswith("worker-webhooks-") for arg in cmd)


STACK_RESTARTED = "stack.process_restarted"


# What tells each child of ``imgbatch run`` apart, by the name the supervisor gives it.
KINDS: dict[str, Callable[[list[str]], bool]] = {
    "api": lambda cmd: "uvicorn" in cmd,
    "worker": lambda cmd: "celery" in cmd and "worker" in cmd and not _webhooks(cmd),
    "worker-webhooks": _webhooks,
    "beat": lambda cmd: "celery" in cmd and "beat" in cmd,
    "mongodb": lambda cmd: any(arg.endswith("secantusd-py") for arg in cmd[:2]),
    # Redis rewrites its process title ("redis-server 127.0.0.1:port").
    "redis": lambda cmd: any("redis-server" in arg for arg in cmd[:1]),
    "seaweedfs": lambda cmd: any(arg.endswith("weed") for arg in cmd[:1]),
}


@dataclass
class RunningStack:
    """``imgbatch run`` as a child of the test, its output in a file the test reads."""

    process: subprocess.Popen[bytes]
    output: Path
    data_dir: Path
    seen: set[psutil.Process] = field(default_factory=set)

    @property
    def services(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / STACK_FILE).read_text()))

    @property
    def api_url(self) -> str:
        return str(self.services["api_url"])

    def child(self, kind: str) -> psutil.Process | None:
        """The child of that kind; every descendant seen is remembered, pool processes too."""
        top = psutil.Process(self.process.pid)
        self.seen.update(top.children(recursive=True))
        for child in top.children():
            with contextlib.suppress(psutil.Error):
                if KINDS[kind](child.cmdline()):
                    return child
        return None

    def restarts_logged(self, kind: str) -> list[dict[str, Any]]:
        return [
            event
            for event in log_events(self.output)
            if event["event"] == STACK_RESTARTED and event["child"] == kind
        ]

    def restarts_counted(self, kind: str) -> float:
        body = httpx.get(f"{self.api_url}/metrics", timeout=10).text
        found = re.search(
            rf'^imgbatch_stack_restarts_total\{{process="{re.escape(kind)}"\}} (\S+)$', body, re.M
        )
        assert found, body
        return float(found.group(1))

    def supervised(self) -> bool:
        try:
            body = httpx.get(f"{self.api_url}/metrics", timeout=10).text
        except httpx.HTTPError:
            return False
        return "imgbatch_stack_restarts_total{" in body

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/api/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def imgbatch_run(data_dir: Path, env: dict[str, str]) -> Iterator[RunningStack]:
    output = data_dir.parent / f"{data_dir.name}-run.log"
    with output.open("wb") as sink:
        process = _start(data_dir, env, sink)
        stack = RunningStack(process, output, data_dir)
        try:
            wait_until(
                lambda: stack.child("beat") is not None and stack.healthy(),
                timeout=120,
                every=0.2,
                what="imgbatch run to be up",
            )
            # The supervisor starts once the stack is up: its counters appear a moment later.
            wait_until(stack.supervised, timeout=60, every=0.2, what="the supervisor's counters")
            yield stack
        finally:
            sigterm_and_wait(process)


def _start(data_dir: Path, env: dict[str, str], sink: IO[bytes]) -> subprocess.Popen[bytes]:
    port = free_port()
    variables = {
        **STACK_ENV,
        **JSON_LOGS,
        "IMGBATCH_PORT": str(port),
        "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "IMGBATCH_DATA_DIR": str(data_dir),
        "IMGBATCH_MONGODB_URL": "",  # empty: start the embedded one
        "IMGBATCH_REDIS_URL": "",
        "IMGBATCH_WORKER_CONCURRENCY": "2",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "imgbatch", "run"],
        env=child_environment(variables),
        stdout=sink,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # A process group of its own, as a shell gives the command it runs in the foreground.
        process_group=0,
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # S3 storage with no endpoint: SeaweedFS is one of the children too.
    env = {"IMGBATCH_STORAGE": "s3", "IMGBATCH_S3_ENDPOINT_URL": ""}
    with imgbatch_run(tmp_path_factory.mktemp("supervised") / "data", env) as stack:
        yield stack


def _ports(process: psutil.Process) -> set[int]:
    listening = process.net_connections()
    return {c.laddr.port for c in listening if c.status == psutil.CONN_LISTEN}


def _completes_a_small_batch(stack: RunningStack, origin: Origin) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        accepted = upload(api, sheet([(1, "Mug", origin.url(f"/img/coffee.jpg?{uuid.uuid4()}"))]))
        assert accepted.status_code == 202, accepted.text
        status = wait_for_status(api, accepted.json()["request_id"], timeout=180)
    assert status["status"] == "completed", status
    assert status["images_done"] == 1 and status["images_failed"] == 0, status
    served = _served(status["products"][0]["output_image_urls"][0])
    assert served.content[:3] == b"\xff\xd8\xff"


def _served(url: str) -> httpx.Response:
    """The output, fetched as a client honouring Retry-After does: a store still coming back
    from its restart answers 503 (never 500) until it serves the object again."""
    answers: list[httpx.Response] = []

    def fetched() -> bool:
        answers.append(httpx.get(url, timeout=60))
        return answers[-1].status_code == 200

    wait_until(fetched, timeout=120, every=1.0, what="the output to be served")
    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers]
    assert all(a.headers["retry-after"] == "5" for a in answers[:-1])
    return answers[-1]


@pytest.mark.parametrize(
    "kind", ["api", "worker", "worker-webhooks", "beat", "redis", "mongodb", "seaweedfs"]
)
def test_a_killed_child_comes_back_where_it_was(
    running: RunningStack, origin: Origin, kind: str
) -> None:
    wait_until(running.healthy, timeout=120, every=0.2, what="the stack to be healthy")
    victim = running.child(kind)
    assert victim is not None
    ports = _ports(victim)
    counted = running.restarts_counted(kind)
    logged = len(running.restarts_logged(kind))
    queued = f"queued-{uuid.uuid4().hex}"
    broker = redis.Redis.from_url(running.services["redis_url"])
    if kind == "redis":
        # A message waiting in a queue when Redis dies: its append-only file keeps it.
        broker.lpush("supervisor-test", queued)
        aof = running.data_dir / "redis" / "appendonly.aof"
        wait_until(lambda: queued.encode() in aof.read_bytes(), what="the AOF to hold it")
    if kind == "worker":
        # Its whole process group, pool processes included, as the out-of-memory killer does.
        assert os.getpgid(victim.pid) == victim.pid
        os.killpg(victim.pid, signal.SIGKILL)
    else:
        victim.kill()

    def back() -> bool:
        again = running.child(kind)
        return again is not None and again.pid != victim.pid and _ports(again) >= ports

    wait_until(back, timeout=120, every=0.2, what=f"{kind} to be restarted on {ports}")
    wait_until(running.healthy, timeout=120, every=0.2, what="the stack to be healthy again")
    # The supervisor logs once the restart is under way: the new process may be seen first.
    wait_until(lambda: len(running.restarts_logged(kind)) > logged, what="the restart's log line")
    restarted = running.restarts_logged(kind)[logged:]
    assert [(e["exit_code"], e["restarts"]) for e in restarted] == [(-9, logged + 1)]
    assert running.restarts_counted(kind) == counted + 1
    if kind == "redis":
        assert broker.lrange("supervisor-test", 0, -1) == [queued.encode()]
    _completes_a_small_batch(running, origin)


def test_a_worker_killed_alone_takes_its_pool_processes_with_it(
    running: RunningStack, origin: Origin
) -> None:
    victim = running.child("worker")
    assert victim is not None
    # IMGBATCH_WORKER_CONCURRENCY=2: both pool processes, once the worker has started them.
    wait_until(lambda: len(victim.children()) == 2, what="the worker's pool processes")
    pool = set(victim.children())
    logged = len(running.restarts_logged("worker"))
    victim.kill()  # its main process only: the pool processes are orphaned, still holding tasks

    def back() -> bool:
        again = running.child("worker")
        return again is not None and again.pid != victim.pid

    wait_until(back, timeout=120, every=0.2, what="the worker to be restarted")
    wait_until(lambda: not _alive(pool), timeout=30, what="the old pool processes to be gone")
    wait_until(lambda: len(running.restarts_logged("worker")) > logged, what="the log line")
    assert [e["restarts"] for e in running.restarts_logged("worker")][logged:] == [logged + 1]
    _completes_a_small_batch(running, origin)


def test_ctrl_c_after_restarts_stops_everything_and_restarts_nothing(
    running: RunningStack,
) -> None:
    for kind in KINDS:  # every child running now joins those seen before
        assert running.child(kind) is not None
    restarts = len([e for e in log_events(running.output) if e["event"] == STACK_RESTARTED])
    # A Ctrl-C at the terminal: SIGINT to the foreground process group (tests/cli/test_main.py
    # stops `imgbatch run` with SIGTERM).
    os.killpg(running.process.pid, signal.SIGINT)
    assert running.process.wait(timeout=120) == 0
    assert not _alive(running.seen)
    after = [e for e in log_events(running.output) if e["event"] == STACK_RESTARTED]
    assert len(after) == restarts, "nothing is restarted while the stack stops"


def test_a_child_that_cannot_start_stops_the_stack_with_one_message(tmp_path: Path) -> None:
    with imgbatch_run(tmp_path / "data", {}) as stack:
        redis_server = stack.child("redis")
        assert redis_server is not None
        # What Redis would read back on its next start is not an append-only file any more;
        # the running one keeps writing to the file it has open.
        aof = stack.data_dir / "redis" / "appendonly.aof"
        broken = aof.with_name("broken")
        broken.write_bytes(b"this is not an append-only file\n")
        broken.replace(aof)
        redis_server.kill()
        assert stack.process.wait(timeout=180) == 1
    output = stack.output.read_text()
    assert "redis exited 5 times in 60s, the last time with exit code 1; stopping the stack" in (
        output
    )
    assert "Bad file format reading the append only file" in output
    assert [e["restarts"] for e in stack.restarts_logged("redis")] == [1, 2, 3, 4]
    assert not _alive(stack.seen)


def _alive(processes: set[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive
