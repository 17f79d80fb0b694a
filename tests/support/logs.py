"""Reading a stack's JSON log files (IMGBATCH_LOG_FORMAT=json) the way a log shipper would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JSON_LOGS = {"IMGBATCH_LOG_FORMAT": "json"}


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


def log_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every JSON line of ``path``; a line that is not JSON (a process killed mid-write, a raw
    print) is skipped here, and tests/core/test_logs.py checks there are none."""
    for line in log_lines(path):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event
