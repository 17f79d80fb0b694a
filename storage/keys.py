"""Where each stored object lives.

- **Outputs are content-addressed per owner:** ``o/{owner}/{sha256}/{profile}/{variant}.{ext}``,
  where ``owner`` is a digest of the API key's id, ``sha256`` the source bytes' and ``profile``
  a digest of the variants' definitions. The same bytes under the same profile for the same
  owner are one set of objects however many requests and products refer to them, so a
  re-import or a repeated image costs nothing; the objects never change once written
  (immutable caching), and they are deleted only when the last request holding them expires
  (``models.media``). Scoped per owner so that one customer's outputs never reveal, through a
  shared URL, that another uploaded the same picture.
- **Temporary originals** of single-image jobs live under ``tmp/``, which ``/media`` never
  serves (:func:`is_public_key`).
- ``{request_id}/{serial}/{index}.jpg`` was the layout before content addressing; retention
  still deletes such prefixes for requests written then.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Final

OUTPUT_PREFIX: Final = "o/"
TEMP_PREFIX: Final = "tmp/"
# Content-addressed objects never change, so a browser or CDN may keep them for a year.
IMMUTABLE: Final = "public, max-age=31536000, immutable"


def owner_digest(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


def media_prefix(owner: str, sha256: str, profile_digest: str) -> str:
    """The folder of one source's outputs under one profile; also its media record's id."""
    return f"{OUTPUT_PREFIX}{owner_digest(owner)}/{sha256}/{profile_digest}"


def variant_key(prefix: str, variant: str, extension: str) -> str:
    return f"{prefix}/{variant}.{extension}"


def temp_key(request_id: str) -> str:
    """The original of a single-image job, kept for retries, never served."""
    return f"{TEMP_PREFIX}{request_id}/original"


def output_key(request_id: str, serial_number: int, index: int) -> str:
    """The layout before content addressing (kept for requests stored then)."""
    return f"{request_id}/{serial_number}/{index}.jpg"


def is_public_key(key: str) -> bool:
    """Whether ``/media`` may serve ``key``: never the temporary area, however it is spelt."""
    normalized = posixpath.normpath("/" + key).lstrip("/")
    return not (normalized + "/").startswith(TEMP_PREFIX)


def cache_control_for(key: str) -> str | None:
    """Immutable for content-addressed outputs; None leaves the server's default."""
    return IMMUTABLE if key.startswith(OUTPUT_PREFIX) else None
