"""``make demo``: the whole pipeline, offline, on embedded defaults and a local image origin."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from imgbatch.cli.embedded import free_port
from imgbatch.cli.keys import create_key
from imgbatch.cli.stack import Stack
from imgbatch.cli.supervisor import CrashLoop, Supervisor
from imgbatch.core.settings import Settings
from imgbatch.domain.taskqueue import CeleryTaskSender

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# The sample sheet names this origin; the demo serves it on whatever port is free.
SAMPLE_ORIGIN = "http://127.0.0.1:8901"
_TIMEOUT = 300.0
_POLL_SECONDS = 0.1


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def image_origin(root: Path) -> Iterator[str]:
    """A loopback static file server standing in for a supplier's CDN."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_demo(settings: Settings, out: Callable[[str], None], sheet: Path | None = None) -> int:
    try:
        return _run_demo(settings, out, sheet)
    except CrashLoop as failure:
        out(str(failure))
        return 1


def _run_demo(settings: Settings, out: Callable[[str], None], sheet: Path | None) -> int:
    sheet = sheet or SAMPLES / "products.csv"
    data_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.monotonic()
    with image_origin(SAMPLES / "images") as origin:
        api_port = free_port()
        env = {
            # The demo's origin is on loopback, which the address guard refuses by default.
            "IMGBATCH_ALLOW_PRIVATE_NETWORKS": "true",
            "IMGBATCH_ALLOWED_PORTS": f"[{origin.rsplit(':', 1)[1]}]",
            "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
        }
        out(f"starting the stack in {data_dir} (MongoDB-protocol server, Redis, API, worker, beat)")
        with (
            Stack(
                settings.model_copy(update={"mongodb_url": None, "redis_url": None}),
                data_dir=data_dir,
                api_port=api_port,
                extra_env=env,
            ) as stack,
            Supervisor(stack) as supervisor,
        ):
            out(f"stack up in {time.monotonic() - started:.1f}s; API at {stack.api_url}")
            _, key = asyncio.run(create_key(stack.settings_for_children(), "local (imgbatch demo)"))
            out(f"created a local API key: {key}")
            # The API is up before the workers are: time measured from the upload would
            # otherwise be mostly the worker starting, not the work.
            out("waiting for the workers to answer a Celery ping (ready to take tasks)")
            waited = _wait_for_workers(stack)
            out(f"workers ready after {waited:.1f}s more")
            body = sheet.read_text(encoding="utf-8").replace(SAMPLE_ORIGIN, origin)
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=stack.api_url, timeout=30, headers=headers) as client:
                accepted = client.post(
                    "/api/upload", files={"file": (sheet.name, body, "text/csv")}
                )
                if accepted.status_code != 202:
                    out(f"upload refused: {accepted.status_code} {accepted.text}")
                    return 1
                accepted_at = time.monotonic()
                request = accepted.json()
                out(
                    f"uploaded {sheet.name}: request {request['request_id']}, "
                    f"{request['products']} products, {request['images']} images"
                )
                status = _wait(client, request["request_id"], out, supervisor)
                # Seen by the poll that found it final: at most _POLL_SECONDS late, never early.
                took = time.monotonic() - accepted_at
                if status["status"] != "completed":
                    out(f"request ended as {status['status']}")
                    return 1
                out(
                    f"all {status['images_total']} images finished {took:.2f}s after the upload "
                    "was accepted"
                )
                result = client.get(f"/api/download/{request['request_id']}")
                result_path = data_dir / "result.csv"
                result_path.write_text(result.text, encoding="utf-8")
    out(
        f"done in {time.monotonic() - started:.1f}s: {status['images_done']} images compressed, "
        f"{status['images_failed']} failed"
    )
    out(f"result CSV: {result_path}")
    for row in list(csv.reader(io.StringIO(result.text)))[:6]:
        out("  " + " | ".join(cell if len(cell) < 70 else cell[:67] + "..." for cell in row))
    return 0


def _wait_for_workers(stack: Stack) -> float:
    """Seconds until every worker of the stack answers a ping: consuming, its pool started."""
    expected = {name for name in stack.processes if name.startswith("worker")}
    sender = CeleryTaskSender.from_settings(stack.settings_for_children())
    started = time.monotonic()
    while time.monotonic() < started + _TIMEOUT:
        # Each ping waits up to PING_TIMEOUT (1 s) for replies, so this loop is not a busy one.
        # Replies are named "<process name>-<n>@<host>" (cli/stack.py's --hostname).
        alive = asyncio.run(sender.workers_alive())
        if expected <= {reply.split("@")[0].rsplit("-", 1)[0] for reply in alive}:
            return time.monotonic() - started
    raise TimeoutError(f"the workers did not answer a ping in {_TIMEOUT}s")


def _wait(
    client: httpx.Client, request_id: str, out: Callable[[str], None], supervisor: Supervisor
) -> dict[str, Any]:
    deadline = time.monotonic() + _TIMEOUT
    last = -1
    while time.monotonic() < deadline:
        supervisor.raise_failure()
        try:
            answer = client.get(f"/api/status/{request_id}", params={"limit": 1})
        except httpx.TransportError:
            # The API is being restarted by the supervisor: ask again.
            time.sleep(0.3)
            continue
        if answer.status_code != 200:
            # 503 while the database is restarted; anything else is a real answer next time.
            time.sleep(0.3)
            continue
        status: dict[str, Any] = answer.json()
        if status["progress"] != last:
            last = status["progress"]
            out(
                f"  {status['status']:<11} {status['progress']:>3}%  "
                f"({status['images_done']} done, {status['images_failed']} failed "
                f"of {status['images_total']})"
            )
        if status["status"] in ("completed", "failed"):
            return status
        time.sleep(_POLL_SECONDS)
    raise TimeoutError(f"request {request_id} did not finish in {_TIMEOUT}s")
