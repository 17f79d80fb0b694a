"""The caller's own metadata on a request: a small flat JSON object, echoed wherever the request
is reported (status, the listing, ``/results``, every webhook event), so an integrator can
correlate what comes back with its own records.

Kept as the JSON text it was validated as (``RequestRecord.metadata_json``): keys such as
``$ref`` or ``a.b`` are fine in JSON but not as MongoDB field names, and the text keeps the
caller's key order.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from imgbatch.core.errors import UnprocessableEntity

# Bytes of the field as sent (UTF-8): enough for ids and a few labels, small enough to go into
# every status answer, results line and webhook body without weighing on them.
MAX_METADATA_BYTES = 4096

Scalar = str | int | float | bool | None
Metadata = dict[str, Scalar]


def parse_metadata(raw: str | None) -> str | None:
    """The ``metadata`` form field, checked and made compact; 422 saying what is wrong."""
    if raw is None or not raw.strip():
        return None
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        _refuse(f"is {size} bytes; the limit is {MAX_METADATA_BYTES}")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        _refuse(f"is not valid JSON ({exc})")
    if not isinstance(value, dict):
        _refuse(f"must be a JSON object, not {_kind(value)}")
    for key, item in value.items():
        if isinstance(item, dict | list):
            _refuse(f"values must be strings, numbers, booleans or null; {key!r} is {_kind(item)}")
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        compact.encode("utf-8")
    except UnicodeEncodeError:
        _refuse("holds an unpaired surrogate (\\ud800-\\udfff), which is not text")
    return compact


def metadata_object(stored: str | None) -> Metadata | None:
    """The stored metadata as an object, for an answer or an event (None if there is none)."""
    if stored is None:
        return None
    value: Metadata = json.loads(stored)
    return value


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: echoed back they would break strict parsers.
    raise ValueError(f"{name} is not a JSON number")


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _refuse(reason: str) -> NoReturn:
    raise UnprocessableEntity({"message": f"metadata {reason}", "field": "metadata"})
