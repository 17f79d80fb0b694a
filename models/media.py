"""Output image storage on a local (or shared) filesystem, under deterministic keys.

The key ``{request_id}/{serial}/{index}.jpg`` is a function of the input position only, so a
re-run overwrites the same file instead of leaving a duplicate behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def output_key(request_id: str, serial_number: int, index: int) -> str:
    return f"{request_id}/{serial_number}/{index}.jpg"


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path | None:
        """The file behind a key, or None when the key would escape the media root."""
        root = self.root.resolve()
        candidate = (root / key).resolve()
        if not candidate.is_relative_to(root) or candidate == root:
            return None
        return candidate

    def save(self, key: str, data: bytes) -> Path:
        target = self.path(key)
        if target is None:
            raise ValueError(f"invalid media key: {key!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader (or a crash) never sees half a JPEG.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
