"""The wheel people install: built from the project as `pip install` would build it, installed
into a clean virtualenv with the lock's runtime dependencies only (no extras), it puts one
top-level package, ``imgbatch``, into site-packages, and its command works there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from imgbatch.core.settings import child_environment

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).parents[2]
# The uv that `make` installs (pinned by hash in tools/uv.txt).
UV = ROOT / ".tools" / "bin" / "uv"


def _uv(*args: str, cwd: Path = ROOT) -> str:
    assert UV.exists(), "run `make install` first: it installs uv into .tools/"
    done = subprocess.run(
        [str(UV), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=child_environment({"UV_PYTHON_DOWNLOADS": "never"}, without="VIRTUAL_ENV"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from it (as pip does from PyPI): nothing is built in the tree.
    log = _uv("build", "--out-dir", str(out), "--python", sys.executable, str(ROOT))
    (wheel,) = out.glob("imgbatch-*.whl")
    return wheel, log


@pytest.fixture(scope="module")
def venv(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel, _ = built
    where = tmp_path_factory.mktemp("clean")
    _uv("venv", "--python", sys.executable, str(where / "venv"))
    python = where / "venv" / "bin" / "python"
    requirements = where / "requirements.txt"
    # The runtime set of the lock, hashes included: what `pip install imgbatch` would resolve
    # to today, minus the dev, bench and embedded extras.
    _uv("export", "--frozen", "--no-emit-project", "--no-dev", "-o", str(requirements))
    _uv("pip", "install", "--python", str(python), "--require-hashes", "-r", str(requirements))
    _uv("pip", "install", "--python", str(python), "--no-deps", str(wheel))
    return where / "venv"


def _run(venv: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Outside the repository, with nothing on PYTHONPATH: only the installed wheel can answer.
    env = child_environment({"PATH": f"{venv / 'bin'}:/usr/bin:/bin"}, without="IMGBATCH_")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_build_names_one_top_level_package_and_warns_of_none(built: tuple[Path, str]) -> None:
    wheel, log = built
    assert "top-level packages" not in log, log  # setuptools' flat-layout warning
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        record = archive.read(f"{dist_info}/RECORD").decode()
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
    roots = {line.split(",")[0].split("/")[0] for line in record.splitlines() if line}
    assert roots == {"imgbatch", dist_info}
    assert top_level == ["imgbatch"]
    # The page's files and the demo's sheet ship inside the package.
    assert "imgbatch/api/static/app.js" in names
    assert "imgbatch/samples/products.csv" in names


def test_installed_into_a_clean_venv_only_imgbatch_is_importable(
    venv: Path, tmp_path: Path
) -> None:
    site = _run(
        venv,
        "python",
        "-c",
        "import importlib.metadata as m, imgbatch;"
        "print(imgbatch.__file__);"
        "print(sorted({str(f).split('/')[0] for f in m.files('imgbatch')}))",
        cwd=tmp_path,
    )
    assert site.returncode == 0, site.stderr
    location, roots = site.stdout.splitlines()
    assert location.startswith(str(venv)), location  # the wheel, not the working tree
    assert roots == "['..', 'imgbatch', 'imgbatch-0.1.0.dist-info']", roots  # '..': bin/imgbatch
    for name in ("api", "core", "worker", "cli", "domain", "models"):
        clash = _run(venv, "python", "-c", f"import {name}", cwd=tmp_path)
        assert "ModuleNotFoundError" in clash.stderr, name


@pytest.mark.parametrize("command", [["imgbatch"], ["python", "-m", "imgbatch"]])
def test_the_command_answers_help_in_the_clean_venv(
    venv: Path, tmp_path: Path, command: list[str]
) -> None:
    done = _run(venv, *command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: imgbatch")
    assert "demo" in done.stdout
    assert "submit" in done.stdout


def test_without_the_embedded_extra_run_says_how_to_get_servers(venv: Path, tmp_path: Path) -> None:
    done = _run(venv, "imgbatch", "run", cwd=tmp_path)
    assert done.returncode != 0
    message = done.stdout + done.stderr
    assert "IMGBATCH_MONGODB_URL" in message, message
    assert "imgbatch[embedded]" in message, message
