"""The sheet reader's vocabulary: the required columns, limits, rows, errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SERIAL_COLUMN: Final = "S. No."
NAME_COLUMN: Final = "Product Name"
URLS_COLUMN: Final = "Input Image Urls"

MAX_LISTED_ERRORS: Final = 100


@dataclass(frozen=True, slots=True)
class SheetLimits:
    """Per-upload limits; ``url_check`` returns a reason to reject a URL, or None."""

    max_rows: int = 100_000
    max_urls_per_row: int = 20
    max_url_length: int = 2048
    url_check: Callable[[str], str | None] | None = None

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_urls_per_row", "max_url_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"SheetLimits.{name} must be at least 1")


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem with one data row; ``column`` is a canonical name, or "" for the whole row."""

    line: int
    column: str
    reason: str


@dataclass(frozen=True, slots=True)
class SheetRow:
    """A valid data row."""

    line: int
    position: int
    serial_number: int
    product_name: str
    image_urls: list[str]
    extra: dict[str, str]


class SheetFormatError(Exception):
    """The file as a whole cannot be used (empty, binary, missing column, too many rows...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def show(value: str, limit: int = 60) -> str:
    """Quote a user value for a message without echoing megabytes of it back."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)
