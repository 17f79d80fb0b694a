"""The deployment files: every IMGBATCH_* variable docker-compose sets is a real setting with a
valid value, every image is pinned, no disk is shared, and Flower is not open to the world."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from imgbatch.core.settings import Settings

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
    assert set(images) == {"seaweedfs", "mongo", "redis"}
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
