"""Output cells: what the result CSV writes back must not run as a spreadsheet formula."""

from __future__ import annotations

from typing import Final

_FORMULA_TRIGGERS: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralize_cell(value: str) -> str:
    """Defuse spreadsheet formula injection (OWASP "CSV Injection") in one output cell.

    A cell starting with ``= + - @``, TAB or CR gets a leading single quote. Negative numbers
    are prefixed too, as OWASP recommends: the result CSV is for people, not for arithmetic.
    """
    if value.startswith(_FORMULA_TRIGGERS):
        return "'" + value
    return value
