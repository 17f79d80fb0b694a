"""The API fuzzer (issue 22): Schemathesis generates requests for every operation in
/openapi.json and sends them to the real stack (API, workers, MongoDB, Redis), once with keys
required and a key, once with auth off. A 5xx, a status the operation does not declare, or a
body that does not match its declared schema fails the test.

Realistic data gets it past 404s: a completed request, a single-image job, a subscriber with a
delivery and a served image are made first, and their ids are what path parameters are drawn
from most of the time (Schemathesis "dictionaries"); the operations' OpenAPI links and the
responses it has seen feed its stateful and fuzzing phases.

Bounded for `make test` (a fixed seed, a few examples per operation); `make fuzz` runs it with
many more (``--fuzz-examples``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from imgbatch.cli.stack import Stack
from tests.conftest import CORPUS
from tests.support.client import sheet, upload, wait_for_status
from tests.support.keys import new_key
from tests.support.origin import Origin
from tests.support.receiver import Receiver
from tests.support.stacks import own_data, side_api
from tests.support.waiting import wait_until

SEED = 22
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
# Streams end after a second, so a generated call on a running request's events returns.
FUZZ_ENV = {"IMGBATCH_EVENTS_MAX_SECONDS": "1", "IMGBATCH_EVENTS_KEEPALIVE_SECONDS": "1"}


@dataclass(frozen=True)
class Target:
    url: str
    key: str | None

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module", params=["auth-on", "auth-off"])
def target(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Target]:
    keyed = request.param == "auth-on"
    # A database, a Redis database and a worker of its own: with auth off every caller is the one
    # local owner the other tests use too, and the subscribers, uploads and rate-limit windows
    # thousands of generated calls leave behind must not reach their tests.
    env = {
        **FUZZ_ENV,
        **own_data(stack, 13 if keyed else 14),
        "IMGBATCH_AUTH_DISABLED": "false" if keyed else "true",
    }
    with side_api(stack, f"api-fuzz-{request.param}", env, worker_concurrency=1) as url:
        key = new_key(stack, f"fuzz-{uuid.uuid4().hex[:6]}", env)[1] if keyed else None
        yield Target(url, key)


def _seed(target: Target, origin: Origin, receiver: Receiver) -> dict[str, list[str]]:
    """Real things for the fuzzer's path parameters to name."""
    with target.client() as api:
        subscriber = api.post(
            "/api/webhooks",
            json={"url": receiver.url("/fuzz"), "events": ["request.completed"]},
        ).json()["id"]
        rows = [
            (1, "Rocket", origin.url("/img/rocket.jpg")),
            (2, "Gone", origin.url("/status/404")),
        ]
        request_id = upload(api, sheet(rows)).json()["request_id"]
        status = wait_for_status(api, request_id)
        image = (CORPUS / "rocket.jpg").read_bytes()
        job = api.post("/api/images", files={"file": ("r.jpg", image, "image/jpeg")}).json()
        wait_for_status(api, job["request_id"])
        deliveries: list[str] = []

        def delivered() -> bool:
            found = api.get(f"/api/webhooks/{subscriber}/deliveries").json()
            deliveries[:] = [d["id"] for d in found]
            return bool(deliveries)

        wait_until(delivered, timeout=60, every=0.2, what="a webhook delivery")
    output = status["products"][0]["output_image_urls"][0]
    return {
        "request_id": [request_id, job["request_id"]],
        "subscriber_id": [subscriber],
        "delivery_id": deliveries,
        "key": [output.split("/media/", 1)[1]],
    }


def _config(values: dict[str, list[str]], examples: int) -> str:
    lines = [f"seed = {SEED}", "workers = 1", "request-timeout = 30", ""]
    for name, items in values.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(items)}", ""]
    lines += ["[parameters]"]
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.8 }}' for name in values]
    lines += [
        "",
        "[generation]",
        f"max-examples = {examples}",
        "",
        "[phases.fuzzing.extra-data-sources]",
        "responses = true",
        "",
    ]
    return "\n".join(lines)


def test_the_fuzzer_finds_no_failure(
    target: Target, origin: Origin, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    examples = int(request.config.getoption("--fuzz-examples"))
    with Receiver() as receiver:
        values = _seed(target, origin, receiver)
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(values, examples))
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{target.url}/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--suppress-health-check",
            "all",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
        ]
        if target.key:
            command += ["--header", f"Authorization: Bearer {target.key}"]
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False
        )
    output = result.stdout + result.stderr
    print(output)  # shown with -s, or with the failure: Schemathesis's summary and curl lines
    assert result.returncode == 0, output[-20000:]
    # Every operation in /openapi.json was exercised, none skipped or errored.
    operations = httpx.get(f"{target.url}/openapi.json").json()["paths"]
    count = sum(len(methods) for methods in operations.values())
    assert f"{count} total" in output or f"{count} selected" in output, output[-5000:]
