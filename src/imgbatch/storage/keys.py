"""Keys: where each stored object lives, and which keys every store accepts.

- **Outputs are content-addressed per owner:** ``o/{owner}/{sha256}/{profile}/{variant}.{ext}``,
  where ``owner`` is a digest of the API key's id, ``sha256`` the source bytes' and ``profile``
  a digest of the variants' definitions. The same bytes under the same profile for the same
  owner are one set of objects however many requests and products refer to them, so a
  re-import or a repeated image costs nothing; the objects never change once written
  (immutable caching), and they are deleted only when the last request holding them expires
  (``models.media``). Scoped per owner so that one customer's outputs never reveal, through a
  shared URL, that another uploaded the same picture.
- **Temporary originals** of single-image jobs live under ``tmp/``, which is never served:
  neither streamed by ``/media`` nor handed out as a presigned or public URL
  (:func:`is_public_key`).
- **Result files** of completed requests live under ``results/{request_id}/``, never served
  as media either: only the download endpoints, which check the caller's key, stream them.
- ``{request_id}/{serial}/{index}.jpg`` was the layout before content addressing; retention
  still deletes such prefixes for requests written then.

Both backends check keys with the same rules, so a key that works on a laptop works on S3 and
the other way round: ``/``-separated, relative, no empty, ``.`` or ``..`` parts, no part
starting with ``.`` (the local store keeps its temporary and metadata files under such names),
no control characters, at most 1024 bytes (S3's own limit).
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Final

OUTPUT_PREFIX: Final = "o/"
TEMP_PREFIX: Final = "tmp/"
# A request's result files (CSV, JSON Lines): its owner's alone, served only by the endpoints
# that check the key, never by /media.
RESULTS_PREFIX: Final = "results/"
# For objects whose bytes can never change under their key (the content-addressed outputs):
# caches may keep them for a year without asking again.
IMMUTABLE: Final = "public, max-age=31536000, immutable"

_MAX_KEY_BYTES = 1024


class InvalidKey(ValueError):
    """A key no store accepts; ``/media`` answers 404 for it, like for a missing object."""


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


def is_public_key(key: str) -> bool:
    """Whether ``key`` may be served (streamed, presigned or linked): never the temporary area
    nor the result files, however they are spelt."""
    normalized = posixpath.normpath("/" + key).lstrip("/") + "/"
    # Case-folded: on a case-insensitive filesystem (macOS, Windows) `TMP/<id>/original` is
    # the very file `tmp/<id>/original` is.
    return not normalized.casefold().startswith((TEMP_PREFIX.casefold(), RESULTS_PREFIX.casefold()))


def check_public_key(key: str) -> str:
    """``key`` if it may be handed out as a URL (a presigned one), else :class:`InvalidKey`."""
    if not is_public_key(check_key(key)):
        raise InvalidKey(f"temporary objects are never served: {key!r}")
    return key


def folder_of(key: str) -> str:
    """The prefix of the folder ``key`` is in (what :meth:`MediaStore.delete_prefix` takes)."""
    return check_key(key).rpartition("/")[0] + "/"


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
