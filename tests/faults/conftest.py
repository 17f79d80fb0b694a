"""Fault tests: each test gets its own MongoDB-protocol server, Redis, API, worker and beat on
free ports, so it can kill any of them. Faults are injected at a point chosen from progress."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from PIL import Image
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from imgbatch.cli.embedded import free_port
from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from imgbatch.domain.taskqueue import (
    DISPATCH_QUEUE,
    IMAGES_QUEUE,
    MAINTENANCE_QUEUE,
    WEBHOOKS_QUEUE,
)
from imgbatch.worker.reconcile import BROKER_MARKER
from tests.conftest import CORPUS, STACK_ENV
from tests.support.client import sheet, upload, wait_for_status
from tests.support.logs import JSON_LOGS, log_events
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.waiting import messages_waiting, wait_until

POISON = "poison-pill"
FAULT_ENV = {
    **STACK_ENV,
    **JSON_LOGS,  # what each worker stored is read back from its log
    # Lease, reconcile interval, idle time and the broker's visibility timeout are the defaults:
    # the recovery these tests bound is the one users get (docs/failure-behaviour.md).
    "IMGBATCH_STAGING_TTL_SECONDS": "2",
    "IMGBATCH_TEST_CRASH_MARKER": POISON,
    # Small tasks, so a fault at 30 % still finds most of the batch queued or running.
    "IMGBATCH_PRODUCTS_PER_TASK": "3",
    "IMGBATCH_WEBHOOK_RETRY_SCHEDULE": "[0, 1, 1, 2, 2]",
    "IMGBATCH_WEBHOOK_POLL_INTERVAL_SECONDS": "0.5",
}
# Issue 21: after any one fault, progress moves again within this long of the killed process
# being back (or of the kill, where nothing has to come back), at the default settings.
RECOVERY_BOUND = 30.0
IMAGES_PER_PRODUCT = 3
PHOTOS = ["chelsea.jpg", "rocket.jpg", "coffee.jpg", "astronaut.jpg"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def slow_origin() -> Iterator[Origin]:
    with Origin(CORPUS, latency=0.05, latency_jitter=0.03) as served:
        yield served


class FaultStack(Stack):
    """A stack plus what the fault tests need to look inside it."""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def db(self) -> Any:
        assert self.mongodb_url
        return MongoClient(self.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=20000)[
            "imgbatch"
        ]

    def start_ready_worker(self, name: str = "worker", **options: Any) -> None:
        """Start a worker in a process group of its own (as under a supervisor: a test can kill
        it whole) and return once it consumes."""
        self.start_worker(name, concurrency=2, own_group=True, **options)
        self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        """On a busy machine a worker takes seconds to boot; a fault's clock must not run then."""
        log = self.data_dir / "logs" / f"{name}.log"

        def ready() -> bool:
            return log.exists() and any(
                event["event"].endswith(" ready.") and event.get("logger") == "celery.apps.worker"
                for event in log_events(log)
            )

        wait_until(ready, timeout=300, every=0.2, what=f"{name} to be ready")

    def stored_writes(self, worker: str = "worker*") -> dict[str, int]:
        """How many times each output key was written, from the log of every worker whose name
        matches ``worker``."""
        writes: dict[str, int] = {}
        for log in (self.data_dir / "logs").glob(f"{worker}.log"):
            for event in log_events(log):
                if event["event"] == "image.stored":
                    writes[event["key"]] = writes.get(event["key"], 0) + 1
        return writes


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[FaultStack]:
    yield from running_fault_stack(tmp_path)


def running_fault_stack(tmp_path: Path, **env_overrides: str) -> Iterator[FaultStack]:
    """A fault stack, with these variables on top of FAULT_ENV."""
    api_port = free_port()
    env = {
        **FAULT_ENV,
        **env_overrides,
        "IMGBATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
    }
    stack = FaultStack(
        Settings(mongodb_url=None, redis_url=None),
        data_dir=tmp_path,
        api_port=api_port,
        extra_env=env,
    )
    try:
        stack.start_services()
        stack.start_api()
        stack.start_beat()
        stack.wait_healthy()
        stack.start_ready_worker()
        yield stack
    finally:
        stack.stop()


def submit_batch(
    api: httpx.Client,
    origin: Origin,
    *,
    products: int = 70,
    poison_serial: int | None = None,
    receiver: Receiver | None = None,
    marker: str = POISON,
) -> str:
    """A batch of ``products`` x 3 images; ``marker`` (the poison pill by default) in the
    second URL of product ``poison_serial``."""
    rows = []
    for serial in range(1, products + 1):
        # /unique/: bytes of their own per image, so every image really is rendered (the same
        # bytes would be rendered once and reused).
        urls = [
            origin.url(f"/unique/{PHOTOS[(serial + i) % len(PHOTOS)]}?p={serial}&i={i}")
            for i in range(IMAGES_PER_PRODUCT)
        ]
        if serial == poison_serial:
            urls[1] += f"&{marker}"
        rows.append((serial, f"SKU-{serial}", ",".join(urls)))
    data = {"webhook_url": receiver.url(f"/hook/{uuid.uuid4().hex}")} if receiver else None
    response = upload(api, sheet(rows), data=data)
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def batch_in_flight(
    stack: FaultStack, origin: Origin, receiver: Receiver, fraction: float = 0.3
) -> str:
    """A 210-image batch (with a webhook), once ``fraction`` of it is done: the fault moment."""
    with stack.client() as api:
        request_id = submit_batch(api, origin, receiver=receiver)
    wait_for_progress(stack, request_id, fraction)
    return request_id


def wait_for_progress(stack: FaultStack, request_id: str, fraction: float) -> None:
    """Read from MongoDB, not the API: its status answers may be a second old."""
    requests = stack.db()["requests"]

    def reached() -> bool:
        doc = requests.find_one({"_id": request_id}) or {}
        finished = doc.get("images_done", 0) + doc.get("images_failed", 0)
        return bool(doc) and finished >= fraction * doc["images_total"]

    wait_until(reached, timeout=120, what=f"{fraction:.0%} progress")


def held_work(stack: FaultStack, request_id: str, pids: set[int]) -> tuple[int, int]:
    """(pid, serial) of a product of the request that is ``processing`` under a lease held by
    one of ``pids``: a process that holds work at the moment it is found."""
    products = stack.db()["products"]
    found: list[tuple[int, int]] = []

    def holding() -> bool:
        for doc in products.find({"request_id": request_id, "status": "processing"}):
            holder = doc.get("holder") or {}
            if holder.get("pid") in pids:
                found.append((int(holder["pid"]), int(doc["serial_number"])))
                return True
        return False

    try:
        wait_until(holding, every=0.02, what=f"one of {sorted(pids)} to hold a product")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stall_report(stack, request_id)}") from None
    return found[0]


def freeze_holder(
    stack: FaultStack, request_id: str, pids: set[int], *, group: int | None = None
) -> tuple[int, list[int], datetime]:
    """Stop (SIGSTOP) a process of ``pids`` that holds a product, or its whole process ``group``,
    so that it holds work at the moment it is killed: between finding a holder and killing it,
    the holder may finish, and a kill of a process that holds nothing proves nothing. Returns the
    holder, the serials it held once stopped, and the wall time it stopped at; the caller
    SIGKILLs it. Stopped processes write nothing new, but a write already on the wire lands."""
    while True:
        victim, _ = held_work(stack, request_id, pids)
        stopped = pids if group else {victim}
        _signal_to(victim, group, signal.SIGSTOP)
        wait_until(
            lambda stopped=stopped: all(_stopped(pid) for pid in stopped),
            every=0.01,
            what="the stop to land",
        )
        frozen = datetime.now(UTC)
        # A final move the holder sent just before the stop still lands: read until what it
        # holds stops changing, so that a product whose write was on the wire is not counted.
        held = held_by(stack, request_id, stopped)
        while True:
            time.sleep(1.0)  # the settle window: long enough for a write on the wire to land
            again = held_by(stack, request_id, stopped)
            if again == held:
                break
            held = again
        if held:
            return victim, held, frozen
        _signal_to(victim, group, signal.SIGCONT)  # it finished first: let it go on, find another


def _signal_to(pid: int, group: int | None, sig: signal.Signals) -> None:
    if group:
        os.killpg(group, sig)
    else:
        os.kill(pid, sig)


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in {psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE}
    except psutil.NoSuchProcess:
        return True


def held_by(stack: FaultStack, request_id: str, pids: set[int]) -> list[int]:
    """Serials of the request's ``processing`` products whose lease one of ``pids`` holds."""
    return [
        int(doc["serial_number"])
        for doc in stack.db()["products"].find({"request_id": request_id, "status": "processing"})
        if (doc.get("holder") or {}).get("pid") in pids
    ]


def worker_pids(stack: FaultStack, name: str = "worker") -> set[int]:
    main = psutil.Process(stack.processes[name].pid)
    return {main.pid, *(child.pid for child in main.children(recursive=True))}


def finished(stack: FaultStack) -> int:
    """Images counted on every request of the stack (each fault test submits one batch)."""
    return sum(
        doc.get("images_done", 0) + doc.get("images_failed", 0)
        for doc in stack.db()["requests"].find({}, {"images_done": 1, "images_failed": 1})
    )


def assert_progress_resumes(
    stack: FaultStack, request_id: str, *, since: float, bound: float = RECOVERY_BOUND
) -> float:
    """Watch the request until it completes: after ``since`` (a ``time.monotonic()``: the kill,
    or the killed process being back) its counted images never stand still for ``bound``
    seconds. Returns the longest stall seen after ``since``."""
    requests = stack.db()["requests"]
    last_move, count, longest = since, None, 0.0
    while True:
        try:
            doc = requests.find_one({"_id": request_id}) or {}
        except PyMongoError:
            doc = {}  # the database is what is down: no progress can be seen
        at = time.monotonic()
        moved = doc.get("images_done", 0) + doc.get("images_failed", 0)
        if doc and count is None:
            count = moved  # where it stood at ``since``
        elif doc and moved != count:
            count, last_move = moved, at
        longest = max(longest, at - last_move)
        if doc.get("status") == "completed":
            return round(longest, 1)
        assert at - last_move < bound, (
            f"no progress for {bound:.0f} s (at {count} of {doc.get('images_total')} images)\n"
            + stall_report(stack, request_id)
        )
        time.sleep(0.1)


def stall_report(stack: FaultStack, request_id: str, *, log_events_shown: int = 40) -> str:
    """What a stalled batch looks like from inside, for the failure message: its unfinished
    products (status, attempts, holder pid, lease left), the messages waiting in Redis, and the
    workers' last warnings and task outcomes. A stall that happens once in many runs on a busy
    machine is explained by this, not by a rerun."""
    lines = []
    holders: set[int] = set()
    now = time.time()
    try:
        products = stack.db()["products"]
        pending = products.count_documents({"request_id": request_id, "status": "pending"})
        lines.append(f"pending products: {pending}")
        for doc in products.find(
            {"request_id": request_id, "status": {"$nin": ["pending", "completed", "failed"]}},
            {"serial_number": 1, "status": 1, "attempts": 1, "holder": 1, "lease_until": 1},
        ):
            lease = doc.get("lease_until")
            left = f"{lease.timestamp() - now:+.1f}s" if lease else "-"
            pid = (doc.get("holder") or {}).get("pid")
            lines.append(
                f"product {doc['serial_number']}: {doc['status']} attempts={doc.get('attempts')}"
                f" holder={pid} lease={left}"
            )
            if pid:
                holders.add(int(pid))
    except PyMongoError as exc:
        lines.append(f"products unreadable: {exc!r}")
    lines.extend(where_holders_wait(stack, holders))
    with contextlib.suppress(redis.RedisError):
        broker = redis.Redis.from_url(stack.redis_url or "")
        queues = (DISPATCH_QUEUE, IMAGES_QUEUE, MAINTENANCE_QUEUE)
        lines.append(f"waiting in Redis: { {q: messages_waiting(broker, q) for q in queues} }")
    for log in sorted((stack.data_dir / "logs").glob("worker*.log")):
        shown = [
            f"{log.stem}: {event.get('level')} {str(event['event'])[:200]}"
            for event in log_events(log)
            if event.get("level") in ("warning", "error", "critical")
            or "retry" in str(event["event"]).lower()
        ]
        lines.extend(shown[-log_events_shown:])
    return "\n".join(lines)


def where_holders_wait(stack: FaultStack, pids: set[int]) -> list[str]:
    """Each live process's coroutines and what they await, now (worker.stacks, on SIGUSR2)."""
    logs = sorted((stack.data_dir / "logs").glob("worker*.log"))

    def dumps() -> list[dict[str, Any]]:
        return [
            event
            for log in logs
            for event in log_events(log)
            if event["event"] == "worker.tasks_dumped" and event.get("pid") in pids
        ]

    seen = len(dumps())
    asked = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR2)
            asked += 1
    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(dumps()) >= seen + asked, timeout=5, what="the dumps")
    return [
        f"holder {event['pid']} task {task['task']}: " + " <- ".join(task["awaits"][::-1])
        for event in dumps()[seen:]
        for task in event["tasks"]
    ]


def assert_pool_free(stack: FaultStack, name: str = "worker") -> None:
    """Once the batch is done, no pool process of the worker is still inside a chunk's run: one
    that never leaves it holds its pool slot (and any products it claimed) for ever."""
    main = stack.processes[name].pid
    pool = worker_pids(stack, name) - {main}
    left: list[str] = []

    def free() -> bool:
        left[:] = [line for line in where_holders_wait(stack, pool) if "process_products" in line]
        return not left

    try:
        wait_until(free, timeout=RECOVERY_BOUND, every=1.0, what="the pool to be free")
    except AssertionError:
        raise AssertionError("a pool process is stuck in a run:\n" + "\n".join(left)) from None


def assert_run_again(
    stack: FaultStack, request_id: str, serials: list[int], killed: datetime
) -> list[int]:
    """The products a killed process held were taken over by another run and completed; returns
    those. The one exception is exact: a product whose final move the killed run had already
    sent (a flush's bulk write on the wire when the process died) lands after the kill with the
    run's own time of sending, before ``killed``, and is not run again. At least one product is
    really taken over."""
    assert serials
    rerun = []
    for serial in serials:
        doc = stack.db()["products"].find_one({"request_id": request_id, "serial_number": serial})
        assert doc is not None
        assert doc["status"] == "completed", serial
        if doc["attempts"] >= 2:  # claimed by the killed run, then once more
            rerun.append(serial)
        else:
            assert doc["finished_at"] < killed, (serial, doc["finished_at"], killed)
    assert rerun, f"none of {serials} was run again"
    return rerun


def assert_recovered(
    stack: FaultStack, request_id: str, *, products: int = 70, failed: int = 0
) -> dict[str, Any]:
    """The fault tests' guarantees, as a user checks them: completed, every image counted
    exactly once, none failed (a fault is nobody's image's fault), every output served whole,
    and each output written no more than once per run of its product."""
    with stack.client() as api:
        status = wait_for_status(api, request_id, ("completed",), timeout=120)
    images = products * IMAGES_PER_PRODUCT
    assert (status["products_total"], status["products_done"]) == (products, products)
    assert (status["images_total"], status["images_done"], status["images_failed"]) == (
        images,
        images - failed,
        failed,
    )
    assert len(status["products"]) == products
    attempts = {
        p["serial_number"]: p["attempts"]
        for p in stack.db()["products"].find({"request_id": request_id})
    }
    writes = stack.stored_writes()
    served = 0
    with stack.client() as api:
        for product in status["products"]:
            outputs = product["output_image_urls"]
            # An image has an output exactly when it did not fail.
            assert outputs.count(None) == len(product["errors"]), product
            for output in outputs:
                if output is None:
                    continue
                # Content-addressed: the key is the output URL's, whatever the image's position.
                key = output.split("/media/", 1)[1]
                # Whatever the store, the output URL a user was given serves a whole image.
                assert_serves_jpeg(api, output)
                served += 1
                # Written once per run of the product that got that far, never more.
                assert 1 <= writes.get(key, 0) <= attempts[product["serial_number"]], key
    assert served == images - failed
    return status


def assert_serves_jpeg(api: httpx.Client, url: str) -> None:
    response = api.get(url, follow_redirects=True)
    assert response.status_code == 200, url
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()
        assert image.format == "JPEG"


def reconciled_since(stack: FaultStack, at: float) -> bool:
    """Whether a reconcile pass that started after ``at`` (a ``time.time()``) has finished: each
    pass leaves its start time in the broker's marker key when it is done."""
    assert stack.redis_url
    marker = redis.Redis.from_url(stack.redis_url).get(BROKER_MARKER)
    return marker is not None and float(marker) > at


def assert_one_completion_event(stack: FaultStack, receiver: Receiver, request_id: str) -> None:
    """At-least-once delivery, but exactly one ``request.completed`` event for the request.

    Exactly one is checked once a second one would have shown: after the first arrived, a
    whole reconcile pass ran (it resends a notice it thinks was lost), then its messages did
    (none waits in the webhook queue, the notice is settled) and the request's deliveries
    have no attempt left to come."""
    db = stack.db()
    assert stack.redis_url
    broker = redis.Redis.from_url(stack.redis_url)

    def completed_ids() -> set[str]:
        ids = set()
        for arrival in receiver.arrivals():
            body = json.loads(arrival.body)
            if body["type"] == "request.completed" and body["data"]["request_id"] == request_id:
                ids.add(arrival.headers["webhook-id"])
        return ids

    def settled() -> bool:
        request = db["requests"].find_one({"_id": request_id}) or {}
        deliveries = list(db["webhook_deliveries"].find({"request_id": request_id}))
        return (
            not request.get("notice_pending")
            and bool(deliveries)
            and all(d["state"] != "pending" for d in deliveries)
            and messages_waiting(broker, WEBHOOKS_QUEUE) == 0
        )

    wait_until(lambda: bool(completed_ids()), timeout=60, what="the request.completed webhook")
    wait_until(settled, timeout=60, what="the request's notice and deliveries to settle")
    after = time.time()
    wait_until(lambda: reconciled_since(stack, after), timeout=60, what="a reconcile pass")
    wait_until(settled, timeout=60, what="what that pass sent to run")
    assert len(completed_ids()) == 1
    assert db["requests"].find_one({"_id": request_id})["completions"] == 1
    events = db["webhook_events"].count_documents(
        {"request_id": request_id, "type": "request.completed"}
    )
    assert events == 1
