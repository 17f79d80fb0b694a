"""A command run in a pseudo-terminal, with the screen a person would see (pexpect runs it,
pyte renders the bytes it writes, cursor movements and redraws included)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pexpect
import pyte

from imgbatch.core.settings import child_environment


class Terminal:
    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        columns: int = 120,
        lines: int = 30,
    ) -> None:
        self.screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "imgbatch", *args],
            env=child_environment({"TERM": "xterm-256color", **(env or {})}),
            cwd=str(cwd) if cwd else None,
            dimensions=(lines, columns),
        )

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def _pump(self, timeout: float) -> bool:
        """Feed what the program wrote to the screen; False once it has exited."""
        try:
            self._stream.feed(self.child.read_nonblocking(65536, timeout=timeout))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return False
        return True

    def wait_for(self, *parts: str, timeout: float = 60.0) -> str:
        """The screen, once it shows every one of ``parts``."""
        deadline = time.monotonic() + timeout
        while not all(part in self.text for part in parts):
            if not self._pump(0.2) or time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {parts}:\n{self.text}")
        return self.text

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for the program to exit; its exit status (the screen stays readable)."""
        deadline = time.monotonic() + timeout
        while self._pump(0.2):
            if time.monotonic() > deadline:
                self.child.terminate(force=True)
                raise AssertionError(f"still running after {timeout}s:\n{self.text}")
        self.child.close()
        status = self.child.exitstatus
        assert status is not None, f"killed by signal {self.child.signalstatus}"
        return int(status)
