"""Memory figures from ``/proc/<pid>/status`` (Linux): exact, no sampling needed."""

from __future__ import annotations

__all__ = ["peak_rss_mb", "reset_peak_rss", "rss_mb"]


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """``VmHWM``: the kernel's high-water mark of the process's resident memory."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def reset_peak_rss(pid: int) -> None:
    """Start ``VmHWM`` again from the current RSS (Linux >= 4.0), to measure one operation."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
