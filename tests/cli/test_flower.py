"""``imgbatch flower`` (``make flower``) beside a running stack: it finds the stack's broker by
itself, listens on loopback only, and asks for the password it printed once."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from imgbatch.cli.embedded import free_port, wait_for_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import child_environment
from tests.support.stacks import non_loopback_address


def _flower(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        "IMGBATCH_DATA_DIR": str(data_dir),
        "IMGBATCH_REDIS_URL": "",  # unset: found through the running stack's stack.json
        "IMGBATCH_FLOWER_PORT": str(port),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "imgbatch", "flower"],
            env=child_environment(env, without="IMGBATCH_FLOWER_PASSWORD"),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def test_flower_watches_the_running_stack_behind_basic_auth(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "flower.log"
    process = _flower(stack.data_dir, port, log)
    try:
        wait_for_port(port, process=process)
        login = re.search(
            r"Flower login for this run \(shown once\): (\S+) / (\S+)", log.read_text()
        )
        assert login, log.read_text()
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/", auth=(login[1], "wrong")).status_code == 401
        auth = (login[1], login[2])
        assert httpx.get(f"{url}/", auth=auth).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            workers = httpx.get(f"{url}/api/workers", params={"status": 1}, auth=auth).json()
            if any(name.startswith("worker-") and alive for name, alive in workers.items()):
                break
            assert time.monotonic() < deadline, workers
            time.sleep(0.5)
        try:
            httpx.get(f"http://{non_loopback_address()}:{port}/", timeout=2)
            raise AssertionError("Flower answered on a non-loopback address")
        except httpx.ConnectError:
            pass
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_flower_without_a_running_stack_says_what_to_do(tmp_path: Path) -> None:
    log = tmp_path / "flower.log"
    process = _flower(tmp_path, free_port(), log)
    assert process.wait(timeout=60) == 1
    assert "make run" in log.read_text()
