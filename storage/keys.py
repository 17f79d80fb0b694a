"""Keys: what each output is stored under, and which keys every store accepts.

The key ``{request_id}/{serial}/{index}.jpg`` is a function of the input position only, so a
re-run overwrites the same object instead of leaving a duplicate behind.

Both backends check keys with the same rules, so a key that works on a laptop works on S3 and
the other way round: ``/``-separated, relative, no empty, ``.`` or ``..`` parts, no part
starting with ``.`` (the local store keeps its temporary and metadata files under such names),
no control characters, at most 1024 bytes (S3's own limit).
"""

from __future__ import annotations


class InvalidKey(ValueError):
    """A key no store accepts; ``/media`` answers 404 for it, like for a missing object."""


# For objects whose bytes can never change under their key (content-addressed keys such as
# ``sha256/<digest>.webp``): caches may keep them for a year without asking again.
IMMUTABLE = "public, max-age=31536000, immutable"

_MAX_KEY_BYTES = 1024


def output_key(request_id: str, serial_number: int, index: int) -> str:
    return f"{request_id}/{serial_number}/{index}.jpg"


def check_key(key: str) -> str:
    """``key`` itself, or :class:`InvalidKey` if a store must not accept it."""
    if not key or len(key.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        raise InvalidKey(f"invalid media key: {key!r}")
    if any(ord(char) < 0x20 or char in "\x7f\\" for char in key):
        raise InvalidKey(f"invalid media key: {key!r}")
    if any(not part or part.startswith(".") for part in key.split("/")):
        raise InvalidKey(f"invalid media key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A folder of keys: a valid key followed by ``/`` (never empty: that would be everything)."""
    if not prefix.endswith("/"):
        raise InvalidKey(f"a media prefix ends with '/': {prefix!r}")
    check_key(prefix[:-1])
    return prefix
