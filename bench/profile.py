"""py-spy recordings of a worker pool process and the MongoDB-protocol server mid-batch.

Optional: used only when the ``py-spy`` binary is installed (``pip install py-spy``). The raw
collapsed stacks are kept under ``bench/results/``; the summary is the share of samples whose
stack passes through each of a few frames that answer "where does the time go".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Bench

# Substrings of "function (file)" frames; the first match in this order names a stack's bucket.
BUCKETS = (
    ("jpeg encode", "_encode_jpeg"),
    ("decode/convert", "_decode"),
    ("download (httpx)", "download"),
    ("store output", "save ("),
    ("mongodb client", "pymongo"),
    ("event loop waiting", "select (selectors"),
    ("mongodb server: storage", "wiredtiger"),
    ("mongodb server: query", "secantus"),
    # Last: the task's own frames sit under Celery's, so only what nothing above claimed.
    ("celery/kombu", "celery"),
    ("celery/kombu", "kombu"),
)


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    name: str
    output: Path
    process: subprocess.Popen[bytes]

    def summary(self) -> dict[str, Any]:
        if self.process.returncode != 0 or not self.output.exists():
            return {"error": f"py-spy exited {self.process.returncode}"}
        buckets: Counter[str] = Counter()
        leaves: Counter[str] = Counter()
        total = 0
        for line in self.output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            leaves[frames[-1]] += count
            lowered = stack.lower()
            bucket = next((b for b, needle in BUCKETS if needle in lowered), "other")
            buckets[bucket] += count
        if not total:
            return {"error": "no samples"}
        return {
            "samples": total,
            "raw": str(self.output),
            "share": {k: round(v / total, 3) for k, v in buckets.most_common()},
            "top_self": [[frame, round(n / total, 3)] for frame, n in leaves.most_common(8)],
        }


def start(bench: Bench, directory: Path, seconds: float) -> list[Recording]:
    binary = _py_spy()
    if binary is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    targets = {n: p for n, p in bench.processes().items() if n.endswith("-child-0")}
    targets.update({n: p for n, p in bench.processes().items() if n == "mongodb"})
    recordings = []
    for name, process in targets.items():
        output = directory / f"{name}.txt"
        command = [binary, "record", "--pid", str(process.pid), "--duration", str(int(seconds))]
        command += ["--rate", "100", "--format", "raw", "--output", str(output), "--nonblocking"]
        popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        recordings.append(Recording(name, output, popen))
    return recordings


def summaries(recordings: list[Recording]) -> dict[str, Any]:
    """Wait for each recording to end and summarise it, keyed "worker pool process"/"mongodb"."""
    result = {}
    for recording in recordings:
        recording.process.wait(timeout=120)
        name = "worker pool process" if "-child-" in recording.name else recording.name
        result[name] = recording.summary()
    return result


def stop(recordings: list[Recording]) -> None:
    for recording in recordings:
        if recording.process.poll() is None:
            recording.process.kill()
            recording.process.wait()
