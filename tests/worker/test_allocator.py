"""The worker's malloc settings: multi-megabyte buffers reuse pages instead of faulting new ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[2]

# Buffers of 4-20 MB allocated, copied and freed, like downloads, pixels and outputs.
_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from imgbatch.worker.allocator import reuse_large_buffers

    tuned = sys.argv[1] == "tuned" and reuse_large_buffers()
    sizes = [(1 + i % 5) * 4 * 1024 * 1024 for i in range(40)]

    def churn(sizes):
        for size in sizes:
            data = bytes(size)
            copy = b"".join([data[: size // 2], data[size // 2 :]])
            del data, copy

    churn(sizes[:5])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn(sizes)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(tuned, faults / len(sizes))
    """
)


def _faults_per_buffer(mode: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(sys.platform != "linux", reason="mallopt is glibc's; ru_minflt is Linux's")
def test_large_buffers_reuse_pages_once_tuned() -> None:
    tuned, tuned_faults = _faults_per_buffer("tuned")
    _, default_faults = _faults_per_buffer("default")

    assert tuned
    # A fresh 12 MB buffer is ~3,000 pages to fault in; reused heap pages are not.
    assert tuned_faults < 1000
    assert tuned_faults * 5 < default_faults
