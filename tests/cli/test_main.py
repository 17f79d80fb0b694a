"""The ``imgbatch`` command as an operator uses it: ``run`` stays up and stops cleanly on
SIGTERM, ``demo`` processes the sample sheet end to end, and health names what is down."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from imgbatch.cli.embedded import free_port, wait_for_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import child_environment
from tests.conftest import STACK_ENV
from tests.support.client import sheet, upload, wait_for_status
from tests.support.origin import Origin
from tests.support.stacks import redis_db, sigterm_and_wait
from tests.support.waiting import wait_until

# Every test here starts `imgbatch run`, `imgbatch demo` or an embedded server itself.
pytestmark = pytest.mark.stack


def _command_lines(process: subprocess.Popen[str]) -> str:
    """The command lines of the process's descendants (one may exit while they are read)."""
    lines = []
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            lines.append(" ".join(child.cmdline()))
    return " ".join(lines)


def _imgbatch(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imgbatch", *args],
        env=child_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


@contextmanager
def _imgbatch_run(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``imgbatch run``, stopped on the way out if the test did not stop it: SIGTERM first, so
    that it stops its children (a SIGKILL would leave the whole stack running)."""
    process = _imgbatch("run", env=env)
    try:
        yield process
    finally:
        sigterm_and_wait(process, timeout=90)


def _sigterm(process: subprocess.Popen[str]) -> str:
    """Stop ``imgbatch run`` as an operator would; it must exit 0. Returns what it printed."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    return output


def test_run_serves_with_embedded_services_and_stops_children_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "IMGBATCH_PORT": str(port),
        "IMGBATCH_DATA_DIR": str(tmp_path),
        "IMGBATCH_WORKER_CONCURRENCY": "1",
    }
    for unset in ("IMGBATCH_MONGODB_URL", "IMGBATCH_REDIS_URL"):
        env[unset] = ""  # empty means "start the embedded one"
    with _imgbatch_run(env) as process:
        wait_for_port(port, timeout=60)
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200,
            every=0.2,
            what="the API to be healthy",
        )
        # The API answers before the stack has started its workers and beat.
        wait_until(
            lambda: all(
                part in _command_lines(process)
                for part in ("secantusd-py", "redis-server", "uvicorn", "celery", "beat")
            ),
            what="every part of the stack to be running",
        )
        children = psutil.Process(process.pid).children(recursive=True)
        # No key, no upload: authentication is on by default.
        assert httpx.post(f"http://127.0.0.1:{port}/api/upload").status_code == 401
        output = _sigterm(process)
    assert "API key for this run (shown once): ibk_" in output
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_run_uses_configured_services_instead_of_embedded_ones(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.mongodb_url and stack.redis_url
    port = free_port()
    env = {
        "IMGBATCH_PORT": str(port),
        "IMGBATCH_DATA_DIR": str(tmp_path),
        "IMGBATCH_MONGODB_URL": stack.mongodb_url,
        "IMGBATCH_REDIS_URL": stack.redis_url,
        "IMGBATCH_WORKER_CONCURRENCY": "1",
    }
    with _imgbatch_run(env) as process:
        wait_for_port(port, timeout=60)
        names = _command_lines(process)
        assert "secantusd-py" not in names
        assert "redis-server" not in names
        _sigterm(process)


def test_run_with_s3_storage_and_no_endpoint_starts_seaweedfs_on_loopback(
    stack: Stack, origin: Origin, tmp_path: Path
) -> None:
    assert stack.mongodb_url
    port = free_port()
    env = {
        **STACK_ENV,
        "IMGBATCH_AUTH_DISABLED": "false",
        "IMGBATCH_PORT": str(port),
        "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "IMGBATCH_DATA_DIR": str(tmp_path),
        "IMGBATCH_MONGODB_URL": stack.mongodb_url,
        # A Redis database of its own: the session's worker must not take this run's tasks.
        "IMGBATCH_REDIS_URL": redis_db(stack, 4),
        "IMGBATCH_WORKER_CONCURRENCY": "1",
        "IMGBATCH_STORAGE": "s3",
        "IMGBATCH_S3_ENDPOINT_URL": "",
    }
    with _imgbatch_run(env) as process:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        key = next(line.split(": ")[1].strip() for line in lines if "API key" in line)
        assert any("media in bucket imgbatch at http://127.0.0.1:" in line for line in lines)
        weed = next(
            p for p in psutil.Process(process.pid).children(True) if "weed" in p.cmdline()[0]
        )
        listening = [c.laddr for c in weed.net_connections() if c.status == psutil.CONN_LISTEN]
        # master, volume, filer, S3 and admin, with their gRPC ports: all on loopback.
        assert len(listening) >= 9
        assert {address.ip for address in listening} == {"127.0.0.1"}
        assert (tmp_path / "seaweedfs" / "s3.json").exists()  # its data under the data dir

        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as api:
            accepted = upload(api, sheet([(1, "Mug", origin.url("/img/coffee.jpg"))]))
            assert accepted.status_code == 202, accepted.text
            status = wait_for_status(api, accepted.json()["request_id"])
        output_url = status["products"][0]["output_image_urls"][0]
        served = httpx.get(output_url)
        assert served.status_code == 200
        assert served.content[:3] == b"\xff\xd8\xff"
        assert not list((tmp_path / "media").rglob("*.jpg"))  # in the bucket, not on disk
        _sigterm(process)
    assert not weed.is_running()


def test_demo_processes_the_sample_sheet_offline(tmp_path: Path) -> None:
    process = _imgbatch("demo", env={"IMGBATCH_DATA_DIR": str(tmp_path)})
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "11 images" in output
    assert "9 images compressed, 2 failed" in output
    # The figure people read is the work, not the worker starting: the demo waits for the
    # workers' ping before it uploads, and then says how long the 11 images took.
    assert output.index("workers ready after") < output.index("uploaded products.csv")
    assert re.search(
        r"^all 11 images finished \d+\.\d\ds after the upload was accepted$", output, re.M
    )
    result = tmp_path / "demo" / "result.csv"
    assert f"result CSV: {result}" in output
    lines = result.read_text().splitlines()
    assert (
        lines[0]
        == "S. No.,Product Name,Input Image Urls,Supplier,Output Image Urls,Errors,Warnings"
    )
    assert len(lines) == 6
    assert "not_an_image" in lines[5] and "http_error" in lines[5]


def test_health_names_the_service_that_is_down(stack: Stack) -> None:
    closed = f"127.0.0.1:{free_port()}"
    for name, env in (
        ("redis", {"IMGBATCH_REDIS_URL": f"redis://{closed}/0"}),
        ("mongodb", {"IMGBATCH_MONGODB_URL": f"mongodb://{closed}/?serverSelectionTimeoutMS=500"}),
    ):
        port = free_port()
        stack.start_api(f"api-down-{name}", port=port, env=env)
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=30)
            assert response.status_code == 503
            assert response.json()["detail"] == f"unavailable: {name}"
            assert response.json()[name] == "unavailable"
            assert response.headers["retry-after"] == "5"
        finally:
            stack.stop_process(f"api-down-{name}")
