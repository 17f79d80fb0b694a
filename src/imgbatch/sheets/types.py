"""The sheet reader's vocabulary: the required columns, limits, rows, errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SERIAL_COLUMN: Final = "S. No."
NAME_COLUMN: Final = "Product Name"
URLS_COLUMN: Final = "Input Image Urls"

MAX_LISTED_ERRORS: Final = 100

#: The upload-time URL policy: why a URL is refused, or None.
UrlCheck = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class SheetLimits:
    """Per-upload limits; ``url_check`` returns a reason to reject a URL, or None. It must judge
    a plain ``http(s)://host[:port]/...`` URL by its host alone: the reader asks it once per
    distinct host of a cell, with ``http://host/``."""

    max_rows: int = 100_000
    max_urls_per_row: int = 20
    max_url_length: int = 2048
    # Named header columns, and UTF-8 bytes of one row's non-empty extra cells (their column
    # names included: both are stored with every row). Without them a 1 MB header of 150,000
    # short names made every row cost megabytes.
    max_columns: int = 100
    max_extra_bytes: int = 8192
    url_check: UrlCheck | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_rows",
            "max_urls_per_row",
            "max_url_length",
            "max_columns",
            "max_extra_bytes",
        ):
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
    # Only the non-empty extra cells: a missing one is written back as an empty cell anyway.
    extra: dict[str, str]
    # UTF-8 bytes of ``extra`` (names and values), for callers that size storage by it.
    extra_bytes: int = 0
    # A Shopify product's rows, every cell exactly as read (sheets.shopify); None otherwise.
    source_rows: list[list[str]] | None = None


class SheetFormatError(Exception):
    """The file as a whole cannot be used (empty, binary, missing column, too many rows...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clip(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, with "..." if anything was cut."""
    return value if len(value) <= limit else value[:limit] + "..."


def show(value: str, limit: int = 60) -> str:
    """Quote a user value for a message without echoing megabytes of it back."""
    return repr(clip(value, limit))


def utf8_length(value: str) -> int:
    """Bytes of ``value`` in UTF-8 (what MongoDB stores), without encoding the usual ASCII."""
    return len(value) if value.isascii() else len(value.encode())
