"""The header: which delimiter, and which column plays which role.

Names are compared case-insensitively, ignoring spaces, dots, underscores, hyphens and a BOM.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from imgbatch.sheets.shopify import ShopifyLayout, is_shopify_header
from imgbatch.sheets.types import (
    NAME_COLUMN,
    SERIAL_COLUMN,
    URLS_COLUMN,
    SheetFormatError,
    clip,
    show,
)

# Normalised forms (see _normalise_header): lower case with spaces, dots, _ and - removed.
SERIAL_ALIASES: Final = frozenset(
    {"sno", "slno", "srno", "serial", "serialno", "serialnumber", "serialnum"}
)
NAME_ALIASES: Final = frozenset({"productname", "product", "name", "productnames"})
URLS_ALIASES: Final = frozenset(
    {
        "inputimageurls",
        "inputimageurl",
        "inputimages",
        "imageurls",
        "imageurl",
        "images",
        "image",
        "imagelinks",
        "urls",
    }
)
_CANONICAL: Final = (
    (SERIAL_COLUMN, SERIAL_ALIASES),
    (NAME_COLUMN, NAME_ALIASES),
    (URLS_COLUMN, URLS_ALIASES),
)

_HEADER_NOISE: Final = re.compile(r"[\s._\-\ufeff]+")
SEP_LINE: Final = re.compile(r"\s*\"?sep=(.)\"?\s*", re.IGNORECASE)
DELIMITERS: Final = (",", ";", "\t")


def _normalise_header(name: str) -> str:
    return _HEADER_NOISE.sub("", name.casefold())


def _count_outside_quotes(text: str) -> dict[str, int]:
    # Every quote toggles "inside", so the even pieces between quotes are the unquoted text.
    # str.count over those pieces instead of a Python loop per character: a 1 MB header took
    # 0.1 s of the upload's time that way.
    outside = text.split('"')[::2]
    return {d: sum(piece.count(d) for piece in outside) for d in DELIMITERS}


def quotes_balanced(text: str) -> bool:
    return text.count('"') % 2 == 0


def is_blank_line(text: str) -> bool:
    return not text.strip(" \t\r\n\ufeff,;")


def _parse_header(lines: list[str], delimiter: str) -> list[str] | None:
    try:
        cells = next(csv_reader(lines, delimiter), None)
    except csv.Error:
        return None
    return None if cells is None else [c.strip().strip("\ufeff").strip() for c in cells]


def csv_reader(lines: Iterable[str], delimiter: str, *, exact: bool = False) -> Iterator[list[str]]:
    # skipinitialspace: hand-written `1, "a,b"` quotes its cell. strict: text after a closing
    # quote is reported rather than silently glued on, and an unclosed quote at EOF is an
    # error instead of a cell holding the rest of the file. ``exact`` (a Shopify file) keeps
    # leading spaces: its cells are written back as they were.
    return csv.reader(
        lines,
        delimiter=delimiter,
        quotechar='"',
        doublequote=True,
        skipinitialspace=not exact,
        strict=True,
    )


@dataclass(slots=True)
class Layout:
    columns: list[str]
    serial: int
    name: int
    urls: int
    extras: list[tuple[int, str]]
    shopify: ShopifyLayout | None = None


def _resolve(columns: list[str], max_columns: int) -> tuple[Layout | None, list[str]]:
    """Map header cells to roles; return (layout, missing canonical names)."""
    # Unnamed columns are ignored and cost nothing per row, so only named ones count.
    named = sum(1 for name in columns if name)
    if named > max_columns:
        raise SheetFormatError(
            f"too many columns: the header has {named} named columns; the limit is {max_columns}"
        )
    found: dict[str, int] = {}
    extras: list[tuple[int, str]] = []
    extra_names: set[str] = set()
    for index, name in enumerate(columns):
        if not name:
            continue
        key = _normalise_header(name)
        role = next((canon for canon, aliases in _CANONICAL if key in aliases), None)
        if role is None:
            if name in extra_names:
                raise SheetFormatError(f"column {show(name)} appears more than once in the header")
            extra_names.add(name)
            extras.append((index, name))
        elif role in found:
            raise SheetFormatError(
                f"columns {show(columns[found[role]])} and {show(name)} both look like the "
                f"{role!r} column; rename or remove one"
            )
        else:
            found[role] = index
    missing = [canon for canon, _ in _CANONICAL if canon not in found]
    if missing:
        return None, missing
    layout = Layout(columns, found[SERIAL_COLUMN], found[NAME_COLUMN], found[URLS_COLUMN], extras)
    return layout, []


def _shopify_layout(
    header_lines: list[str], delimiter: str, columns: list[str], max_columns: int
) -> Layout:
    if len(columns) > max_columns:
        raise SheetFormatError(
            f"too many columns: the header has {len(columns)} columns; the limit is {max_columns}"
        )
    duplicated = next((name for name in columns if name and columns.count(name) > 1), None)
    if duplicated is not None:
        raise SheetFormatError(f"column {show(duplicated)} appears more than once in the header")
    raw = next(csv_reader(header_lines, delimiter, exact=True))
    raw[0] = raw[0].removeprefix("\ufeff")
    return Layout(columns, -1, -1, -1, [], ShopifyLayout.of(columns, raw))


def choose_delimiter(
    header_lines: list[str], forced: str | None, max_columns: int
) -> tuple[str, Layout]:
    text = "".join(header_lines)
    if forced is not None:
        candidates = [forced]
    else:
        counts = _count_outside_quotes(text)
        candidates = sorted(DELIMITERS, key=lambda d: -counts[d])  # stable: "," first on ties
    fallback: tuple[list[str], list[str]] | None = None
    for delimiter in candidates:
        columns = _parse_header(header_lines, delimiter)
        if columns is None:
            continue
        try:
            layout, missing = _resolve(columns, max_columns)
        except SheetFormatError:
            if delimiter == candidates[0]:
                raise
            continue
        if layout is not None:
            return delimiter, layout
        # Only when the header is not our own layout: a sheet of ours may have extra columns
        # named like Shopify's.
        if is_shopify_header(columns):
            return delimiter, _shopify_layout(header_lines, delimiter, columns, max_columns)
        if fallback is None:
            fallback = (columns, missing)
    if fallback is None:
        raise SheetFormatError(f"the header line is malformed: {show(text.strip(), 200)}")
    columns, missing = fallback
    # Truncated like every other echo of user input: a 1 MB header must not come back whole.
    seen = ", ".join(repr(c) for c in columns)
    raise SheetFormatError(
        f"missing required column{'s' if len(missing) > 1 else ''}: "
        f"{', '.join(repr(m) for m in missing)}; the header read was "
        f"{len(columns)} column{'s' if len(columns) > 1 else ''}: {clip(seen, 200)}"
    )
