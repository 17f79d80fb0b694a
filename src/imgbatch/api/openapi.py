"""The error bodies each route declares in the OpenAPI document (``/docs``).

Every error is ``{"detail": ...}`` from one exception handler; each error class provides its
schema (:meth:`core.errors.ImgbatchError.schema`), and a route lists the ones it can answer
with ``responses=errors(...)``. tests/api/test_docs.py checks every route against its list.
"""

from __future__ import annotations

from typing import Any

from imgbatch.api.auth import Unauthorized
from imgbatch.core.errors import Gone, ImgbatchError, NotFound


def errors(*classes: type[ImgbatchError]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer with these errors."""
    return {
        cls.status_code: {"model": cls.schema(), "description": cls.docs_description()}
        for cls in classes
    }


# Reading one of the caller's requests: no key, someone else's or unknown, expired.
OWNED_REQUEST = (Unauthorized, NotFound, Gone)
