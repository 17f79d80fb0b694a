"""The reader: open a sheet, read its header, then stream its valid rows and record the rest."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from typing import BinaryIO, Final

from imgbatch.sheets.encoding import Lines, detect_encoding
from imgbatch.sheets.header import (
    DELIMITERS,
    SEP_LINE,
    Layout,
    choose_delimiter,
    csv_reader,
    is_blank_line,
    quotes_balanced,
)
from imgbatch.sheets.rows import SerialIndex, check_urls, parse_serial
from imgbatch.sheets.shopify import HANDLE, shopify_products
from imgbatch.sheets.types import (
    MAX_LISTED_ERRORS,
    NAME_COLUMN,
    SERIAL_COLUMN,
    URLS_COLUMN,
    RowError,
    SheetFormatError,
    SheetLimits,
    SheetRow,
    utf8_length,
)

_MAX_HEADER_LINES: Final = 20


class SheetReader:
    """A sheet whose header has been read; iterate :meth:`rows` once to stream the data."""

    columns: list[str]
    extra_columns: list[str]
    encoding: str
    delimiter: str
    errors: list[RowError]
    error_count: int
    invalid_row_count: int

    def __init__(
        self, lines: Lines, layout: Layout, delimiter: str, encoding: str, limits: SheetLimits
    ) -> None:
        """Internal: use :func:`open_sheet`."""
        self.columns = layout.columns
        self.extra_columns = [name for _, name in layout.extras]
        self.encoding = encoding
        self.delimiter = delimiter
        self.errors = []
        self.error_count = 0
        self.invalid_row_count = 0
        self._lines = lines
        self._layout = layout
        self._limits = limits
        self._records = self._iter_records()
        self._first = next(self._records, None)
        if self._first is None:
            raise SheetFormatError("the sheet has a header but no data rows")
        self._started = False

    @property
    def shopify_header(self) -> list[str] | None:
        """A Shopify product CSV's header cells exactly as read; None for any other layout."""
        return None if self._layout.shopify is None else self._layout.shopify.header

    @property
    def column_roles(self) -> list[tuple[str, str | None]]:
        """Named header columns in input order, each with its canonical role (None: extra).

        A Shopify file's products get the default layout's columns plus its handle: that is
        what the default result CSV of its request shows.
        """
        layout = self._layout
        if layout.shopify is not None:
            return [(SERIAL_COLUMN, SERIAL_COLUMN), (NAME_COLUMN, NAME_COLUMN),
                    (URLS_COLUMN, URLS_COLUMN), (HANDLE, None)]  # fmt: skip
        roles = {layout.serial: SERIAL_COLUMN, layout.name: NAME_COLUMN, layout.urls: URLS_COLUMN}
        return [(name, roles.get(index)) for index, name in enumerate(layout.columns) if name]

    def _iter_records(self) -> Iterator[tuple[int, list[str] | None, str]]:
        """Yield (start line, cells or None, csv problem) for each non-blank record."""
        exact = self._layout.shopify is not None
        reader = csv_reader(self._lines, self.delimiter, exact=exact)
        data_rows = 0
        while True:
            start = self._lines.count + 1
            try:
                record = next(reader, None)
            except csv.Error as exc:
                message = str(exc)
                if "unexpected end of data" in message:
                    raise SheetFormatError(
                        f"line {start}: a quoted cell is never closed (unbalanced '\"'); "
                        "every line after it was swallowed into that cell"
                    ) from None
                if "field larger than field limit" in message:
                    raise SheetFormatError(
                        f"line {start}: a cell is longer than {csv.field_size_limit()} "
                        "characters (is a quote left unclosed?)"
                    ) from None
                if "NUL" in message:
                    raise SheetFormatError(f"line {start}: the file contains NUL bytes") from None
                cells, problem = None, f"malformed quoting: {message}"
            else:
                if record is None:
                    return
                cells = record if exact else [cell.strip() for cell in record]
                if not any(cell.strip() for cell in cells) if exact else not any(cells):
                    continue
                problem = ""
            data_rows += 1
            if data_rows > self._limits.max_rows:
                raise SheetFormatError(
                    f"too many rows: the sheet has more than {self._limits.max_rows} data rows "
                    f"(line {start} is row {data_rows}); split it into smaller sheets"
                )
            yield start, cells, problem

    def rows(self) -> Iterator[SheetRow]:
        """Yield valid rows in input order; record invalid ones; raise on whole-file problems."""
        if self._started:
            raise RuntimeError("SheetReader.rows() can only be iterated once")
        self._started = True
        return self._rows()

    def _rows(self) -> Iterator[SheetRow]:
        first = self._first
        assert first is not None
        self._first = None
        records = itertools.chain((first,), self._records)
        if self._layout.shopify is not None:
            yield from shopify_products(records, self._layout.shopify, self._limits, self._bad)
            return
        serials = SerialIndex(self._limits.max_rows)
        position = 0
        for start, cells, problem in records:
            row: SheetRow | None = None
            if cells is None:
                problems = [("", problem)]
            else:
                row, problems = self._validate(start, position, cells, serials)
            if problems:
                self.invalid_row_count += 1
                for column, reason in problems:
                    self._record(RowError(start, column, reason))
            elif row is not None:
                position += 1
                yield row

    def _bad(self, error: RowError) -> None:
        """A Shopify row's problem: each one makes its row (and product) invalid."""
        self.invalid_row_count += 1
        self._record(error)

    def _record(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(error)

    def _validate(
        self, line: int, position: int, cells: list[str], serials: SerialIndex
    ) -> tuple[SheetRow | None, list[tuple[str, str]]]:
        layout = self._layout
        problems: list[tuple[str, str]] = []
        width = len(layout.columns)
        count = len(cells)
        if count > width and any(cells[width:]):
            problems.append(("", f"row has {count} cells but the header has {width} columns"))

        # A short row's missing cells are empty. Indexed rather than padded: padding every row
        # to a 150,000-column header cost megabytes per row.
        def cell(index: int) -> str:
            return cells[index] if index < count else ""

        serial = parse_serial(cell(layout.serial), problems)
        if serial is not None:
            earlier = serials.first_line(serial)
            if earlier is not None:
                problems.append(
                    (
                        SERIAL_COLUMN,
                        f"duplicate serial number {serial} (first used on line {earlier})",
                    )
                )
            else:
                serials.add(serial, line)

        name = cell(layout.name)
        if not name:
            problems.append((NAME_COLUMN, "product name is empty"))

        urls = check_urls(cell(layout.urls), self._limits, problems)
        extra: dict[str, str] = {}
        extra_bytes = 0
        if layout.extras:  # most sheets have none: no comprehension and sum per row for them
            extra = {column: cells[index] for index, column in layout.extras if cell(index)}
            extra_bytes = sum(utf8_length(k) + utf8_length(v) for k, v in extra.items())
        if extra_bytes > self._limits.max_extra_bytes:
            problems.append(
                (
                    "",
                    f"the extra columns of this row hold {extra_bytes} bytes; the limit is "
                    f"{self._limits.max_extra_bytes} bytes per row",
                )
            )
        if problems or serial is None:
            return None, problems
        return SheetRow(line, position, serial, name, urls, extra, extra_bytes), problems


def open_sheet(stream: BinaryIO, limits: SheetLimits) -> SheetReader:
    """Check the file, read its header and first data row; raise SheetFormatError if unusable.

    ``stream`` must be seekable (it is read twice: once to decide the encoding and rule out
    binary content, once to parse). It is left open.
    """
    codec, reported, start = detect_encoding(stream)
    lines = Lines(stream, codec, start)
    forced: str | None = None
    header: list[str] = []
    for line in lines:
        if not header and is_blank_line(line):
            continue
        sep = None if header or forced else SEP_LINE.fullmatch(line)
        if sep is not None and sep.group(1) in DELIMITERS:
            forced = sep.group(1)
            continue
        header.append(line)
        if quotes_balanced("".join(header)):
            break
        if len(header) >= _MAX_HEADER_LINES:
            raise SheetFormatError("the header line has an unclosed quote")
    if not header:
        raise SheetFormatError("the file has no header line: it contains only blank lines")
    if not quotes_balanced("".join(header)):
        raise SheetFormatError("the header line has an unclosed quote")
    delimiter, layout = choose_delimiter(header, forced, limits.max_columns)
    return SheetReader(lines, layout, delimiter, reported, limits)
