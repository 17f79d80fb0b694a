"""Where each output is stored.

The key ``{request_id}/{serial}/{index}.jpg`` is a function of the input position only, so a
re-run overwrites the same object instead of leaving a duplicate behind.
"""

from __future__ import annotations


def output_key(request_id: str, serial_number: int, index: int) -> str:
    return f"{request_id}/{serial_number}/{index}.jpg"
