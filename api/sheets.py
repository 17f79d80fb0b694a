"""Streaming parse and validation of uploaded product sheets, and the result-CSV cell neutraliser.

A product sheet is a CSV (or Excel "Unicode text") file with three required columns::

    S. No.,Product Name,Input Image Urls
    1,SKU1,"https://a.example/img1.jpg,https://a.example/img2.jpg"

``open_sheet`` pre-scans the whole file (in 64 KiB chunks) for encoding and binary content,
reads the header and the first data row, and raises :class:`SheetFormatError` for whole-file
problems. ``SheetReader.rows`` then streams the valid rows; invalid rows are recorded in
``errors`` (the first 100), ``error_count`` (all) and ``invalid_row_count``. Nothing is held per
row except a compact serial-number index, so memory stays flat for 100k-row sheets.

``rows()`` can still raise :class:`SheetFormatError` part-way (row cap exceeded, a quote never
closed, an absurdly long line): callers must treat the whole upload as rejected then, even
though some rows were already yielded.

Choices (documented here because the upload endpoint and the help page rely on them):

* Encodings: a BOM decides UTF-8 / UTF-16 (UTF-32 is refused with a hint). Otherwise the file
  is UTF-8 if every byte decodes as UTF-8, else Windows-1252. The decision is made for the
  whole file by an incremental pre-scan, so a stray cp1252 byte on line 90,000 cannot turn
  into a decode error after rows have already been handed out.
* Physical lines end at ``\\r\\n``, ``\\r`` or ``\\n`` (as the csv module sees them); line
  numbers are 1-based and point at the line where a row starts.
* An optional Excel ``sep=;`` first line selects the delimiter. Otherwise the delimiter is the
  one of ``,`` ``;`` ``\\t`` that occurs most often outside quotes in the header line, but one
  whose header actually contains the required columns wins over a raw count.
* Header names are compared case-insensitively, ignoring spaces, dots, underscores, hyphens and
  a BOM; accepted forms are in ``SERIAL_ALIASES``, ``NAME_ALIASES``, ``URLS_ALIASES``.
  Columns with an empty header are ignored (Excel often adds trailing empty columns). Other
  columns are kept as ``extra`` under their original (stripped) spelling; repeating a name, or
  giving two columns that both mean the same required column, is a whole-file error.
* Cells are stripped of surrounding whitespace. A row with fewer cells than the header has the
  missing cells treated as empty (so a missing required value is reported against its column);
  surplus cells that are empty are ignored, surplus cells with content make the row invalid.
* Quoting follows RFC 4180 strictly: text after a closing quote is a row error, and a quote
  that is never closed is a whole-file error (it swallowed every row after it).
* Binary content: a known magic number (PNG, JPEG, GIF, PDF, ZIP/.xlsx, OLE/.xls, gzip, 7z,
  RAR, ELF), any NUL, or more than 10% control characters in the first 64 KiB.
* The image-URL cell is split on whitespace, and on ``,`` or ``;`` where the next piece starts
  with a URL scheme (``xxx://``) or is empty. Commas inside one URL (CDN transforms like
  ``w_100,h_100``) therefore survive; the price is that ``https://a/1.jpg,b/2.jpg`` is one URL.
  A scheme-less piece after whitespace is its own (invalid) URL. Duplicates are kept.
* Serial numbers are ASCII digits only (``"007"`` is 7); ``1.0``, ``+1``, ``1_000`` and
  non-ASCII digits are refused. Each problem in a row is a separate ``RowError``; a row's
  serial is remembered even when the row is invalid, so a later duplicate is still reported.
* ``SheetRow.position`` counts yielded (valid) rows only, so positions are dense 0..n-1.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final
from urllib.parse import urlsplit

__all__ = [
    "NAME_COLUMN",
    "SERIAL_COLUMN",
    "URLS_COLUMN",
    "RowError",
    "SheetFormatError",
    "SheetLimits",
    "SheetReader",
    "SheetRow",
    "neutralize_cell",
    "open_sheet",
]

SERIAL_COLUMN: Final = "S. No."
NAME_COLUMN: Final = "Product Name"
URLS_COLUMN: Final = "Input Image Urls"

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

MAX_LISTED_ERRORS: Final = 100
_CHUNK: Final = 64 * 1024
# A physical line this long is not a product sheet; the cap keeps a newline-free binary or a
# giant one-line file from being materialised as a single str.
_MAX_LINE_CHARS: Final = 1024 * 1024
# Share of control characters in the first chunk above which the file is called binary.
_CONTROL_RATIO: Final = 0.10
_MAX_HEADER_LINES: Final = 20
_MAX_SERIAL: Final = 2**63 - 1  # stored as a MongoDB int64

_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook? export it as CSV)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office document (.xls? export it as CSV)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable"),
)
_UTF32_BOMS: Final = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

# C0 controls and DEL, minus the whitespace a text file legitimately contains.
_CONTROL_BYTES: Final = bytes(b for b in [*range(0x20), 0x7F] if b not in b"\t\n\r")
_CONTROL_CHARS: Final = {b: None for b in _CONTROL_BYTES}
# Bytes with no character in Python's cp1252 codec.
_CP1252_UNDEFINED: Final = b"\x81\x8d\x8f\x90\x9d"

_NEWLINE: Final = re.compile(r"\r\n|\r|\n")
_HEADER_NOISE: Final = re.compile(r"[\s._\-\ufeff]+")
_DIGITS: Final = re.compile(r"[0-9]+")
_SCHEME_START: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_SPLIT: Final = re.compile(r"([,;])")
_SEP_LINE: Final = re.compile(r"\s*\"?sep=(.)\"?\s*", re.IGNORECASE)
_DELIMITERS: Final = (",", ";", "\t")
_FORMULA_TRIGGERS: Final = ("=", "+", "-", "@", "\t", "\r")


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


def neutralize_cell(value: str) -> str:
    """Defuse spreadsheet formula injection (OWASP "CSV Injection") in one output cell.

    A cell starting with ``= + - @``, TAB or CR gets a leading single quote. Negative numbers
    are prefixed too, as OWASP recommends: the result CSV is for people, not for arithmetic.
    """
    if value.startswith(_FORMULA_TRIGGERS):
        return "'" + value
    return value


# --------------------------------------------------------------------------------------------
# Encoding detection and physical lines


def _show(value: str, limit: int = 60) -> str:
    """Quote a user value for a message without echoing megabytes of it back."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)


def _sniff_magic(head: bytes) -> None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise SheetFormatError(f"the file is {what}, not a CSV or text product sheet")


def _binary_error(offset: int, unit: str, hint: str = "") -> SheetFormatError:
    return SheetFormatError(
        f"the file contains a NUL {unit} (at {unit} {offset}); it looks like a binary file, "
        f"not a CSV or text product sheet{hint}"
    )


def _scan_utf16(stream: BinaryIO, start: int) -> None:
    """Validate a BOM-marked UTF-16 file end to end: decodable, no NUL, not control soup."""
    stream.seek(start)
    decoder = codecs.getincrementaldecoder("utf-16")(errors="strict")
    seen = 0
    first = True
    while True:
        raw = stream.read(_CHUNK)
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise SheetFormatError(
                f"the file starts with a UTF-16 byte-order mark but is not valid UTF-16 "
                f"({exc.reason})"
            ) from None
        nul = text.find("\x00")
        if nul >= 0:
            raise _binary_error(seen + nul, "character")
        if first and text:
            first = False
            _check_control_share(len(text) - len(text.translate(_CONTROL_CHARS)), len(text))
        seen += len(text)
        if not raw:
            return


def _check_control_share(controls: int, total: int) -> None:
    if total and controls / total > _CONTROL_RATIO:
        raise SheetFormatError(
            "the file is mostly control characters; it looks like a binary file, "
            "not a CSV or text product sheet"
        )


def _scan_8bit(stream: BinaryIO, start: int) -> str:
    """Pick UTF-8 or cp1252 for a file without a UTF-16/32 BOM, rejecting binary content."""
    stream.seek(start)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict")
    utf8_ok = True
    undefined_at = -1  # first byte cp1252 cannot decode, in case UTF-8 fails too
    offset = 0
    first = True
    while True:
        raw = stream.read(_CHUNK)
        nul = raw.find(b"\x00")
        if nul >= 0:
            hint = ""
            if raw[1:64:2].count(0) > 8 or raw[0:64:2].count(0) > 8:
                hint = " (UTF-16 without a byte-order mark? save it as UTF-8 CSV)"
            raise _binary_error(offset + nul, "byte", hint)
        if first and raw:
            first = False
            _check_control_share(len(raw) - len(raw.translate(None, _CONTROL_BYTES)), len(raw))
        if utf8_ok:
            try:
                utf8.decode(raw, final=not raw)
            except UnicodeDecodeError:
                utf8_ok = False
        if undefined_at < 0 and len(raw.translate(None, _CP1252_UNDEFINED)) != len(raw):
            undefined_at = offset + min(
                i for i in (raw.find(bytes([b])) for b in _CP1252_UNDEFINED) if i >= 0
            )
        offset += len(raw)
        if not raw:
            break
    if utf8_ok:
        return "utf-8"
    if undefined_at >= 0:
        raise SheetFormatError(
            f"the file is neither UTF-8 nor Windows-1252 text (undecodable byte at byte "
            f"{undefined_at}); save it as UTF-8 CSV"
        )
    return "cp1252"


def _detect_encoding(stream: BinaryIO) -> tuple[str, str, int]:
    """Return (codec to decode with, encoding name to report, byte offset to start at)."""
    if not stream.seekable():
        raise ValueError("open_sheet needs a seekable stream")
    origin = stream.tell()
    head = stream.read(_CHUNK)
    if not head:
        raise SheetFormatError("the file is empty")
    if head.startswith(_UTF32_BOMS):
        raise SheetFormatError("UTF-32 text is not supported; save the sheet as UTF-8 CSV")
    if head.startswith(_UTF16_BOMS):
        _scan_utf16(stream, origin)
        return "utf-16", "utf-16", origin
    _sniff_magic(head)
    if head.startswith(codecs.BOM_UTF8):
        chosen = _scan_8bit(stream, origin + len(codecs.BOM_UTF8))
        # The BOM is skipped either way; a cp1252 file that merely starts with those bytes
        # would begin with mojibake "ï»¿" in its first header cell otherwise.
        reported = "utf-8-sig" if chosen == "utf-8" else chosen
        return chosen, reported, origin + len(codecs.BOM_UTF8)
    chosen = _scan_8bit(stream, origin)
    return chosen, chosen, origin


class _Lines:
    """Physical lines of the decoded stream, counting how many have been handed out.

    csv.reader pulls exactly the lines of one record per ``next()``, so ``count`` before and
    after a record gives its exact start line, including quoted cells that span lines.
    """

    __slots__ = ("_decoder", "_lines", "_stream", "count")

    def __init__(self, stream: BinaryIO, encoding: str, start: int) -> None:
        stream.seek(start)
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.count = 0
        # One shared generator, so the header loop and csv.reader continue where the other
        # stopped.
        self._lines = self._generate()

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def _generate(self) -> Iterator[str]:
        buffer = ""
        while True:
            raw = self._stream.read(_CHUNK)
            final = not raw
            try:
                buffer += self._decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:  # the pre-scan makes this unreachable
                raise SheetFormatError(f"the file could not be decoded: {exc.reason}") from None
            begin = 0
            for match in _NEWLINE.finditer(buffer):
                end = match.end()
                # A CR at the very end of the chunk may be the first half of CRLF.
                if end == len(buffer) and match.group() == "\r" and not final:
                    break
                self.count += 1
                yield buffer[begin:end]
                begin = end
            buffer = buffer[begin:]
            if len(buffer) > _MAX_LINE_CHARS:
                raise SheetFormatError(
                    f"line {self.count + 1} is longer than {_MAX_LINE_CHARS} characters; "
                    "this does not look like a product sheet"
                )
            if final:
                if buffer:
                    self.count += 1
                    yield buffer
                return


# --------------------------------------------------------------------------------------------
# Header


def _normalise_header(name: str) -> str:
    return _HEADER_NOISE.sub("", name.casefold())


def _count_outside_quotes(text: str) -> dict[str, int]:
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return counts


def _quotes_balanced(text: str) -> bool:
    return text.count('"') % 2 == 0


def _is_blank_line(text: str) -> bool:
    return not text.strip(" \t\r\n\ufeff,;")


def _parse_header(lines: list[str], delimiter: str) -> list[str] | None:
    try:
        cells = next(_csv_reader(lines, delimiter), None)
    except csv.Error:
        return None
    return None if cells is None else [c.strip().strip("\ufeff").strip() for c in cells]


def _csv_reader(lines: Iterable[str], delimiter: str) -> Iterator[list[str]]:
    # skipinitialspace: hand-written `1, "a,b"` quotes its cell. strict: text after a closing
    # quote is reported rather than silently glued on, and an unclosed quote at EOF is an
    # error instead of a cell holding the rest of the file.
    return csv.reader(
        lines,
        delimiter=delimiter,
        quotechar='"',
        doublequote=True,
        skipinitialspace=True,
        strict=True,
    )


@dataclass(slots=True)
class _Layout:
    columns: list[str]
    serial: int
    name: int
    urls: int
    extras: list[tuple[int, str]]


def _resolve(columns: list[str]) -> tuple[_Layout | None, list[str]]:
    """Map header cells to roles; return (layout, missing canonical names)."""
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
                raise SheetFormatError(f"column {name!r} appears more than once in the header")
            extra_names.add(name)
            extras.append((index, name))
        elif role in found:
            raise SheetFormatError(
                f"columns {columns[found[role]]!r} and {name!r} both look like the "
                f"{role!r} column; rename or remove one"
            )
        else:
            found[role] = index
    missing = [canon for canon, _ in _CANONICAL if canon not in found]
    if missing:
        return None, missing
    layout = _Layout(columns, found[SERIAL_COLUMN], found[NAME_COLUMN], found[URLS_COLUMN], extras)
    return layout, []


def _choose_delimiter(header_lines: list[str], forced: str | None) -> tuple[str, _Layout]:
    text = "".join(header_lines)
    if forced is not None:
        candidates = [forced]
    else:
        counts = _count_outside_quotes(text)
        candidates = sorted(_DELIMITERS, key=lambda d: -counts[d])  # stable: "," first on ties
    fallback: tuple[list[str], list[str]] | None = None
    for delimiter in candidates:
        columns = _parse_header(header_lines, delimiter)
        if columns is None:
            continue
        try:
            layout, missing = _resolve(columns)
        except SheetFormatError:
            if delimiter == candidates[0]:
                raise
            continue
        if layout is not None:
            return delimiter, layout
        if fallback is None:
            fallback = (columns, missing)
    if fallback is None:
        raise SheetFormatError(f"the header line is malformed: {_show(text.strip(), 200)}")
    columns, missing = fallback
    raise SheetFormatError(
        f"missing required column{'s' if len(missing) > 1 else ''}: "
        f"{', '.join(repr(m) for m in missing)}; the header read was "
        f"{', '.join(repr(c) for c in columns)}"
    )


# --------------------------------------------------------------------------------------------
# Rows


class _SerialIndex:
    """serial -> first line, compact for the usual dense 1..N numbering.

    A dict of 100k int->int pairs costs ~12 MB; a flat array indexed by serial costs 8 bytes a
    slot, so serials up to a few times the row cap go there and only outliers use the dict.
    """

    __slots__ = ("_dense", "_dense_cap", "_sparse")

    def __init__(self, max_rows: int) -> None:
        self._dense = array("Q")
        self._dense_cap = max(4096, 4 * max_rows)
        self._sparse: dict[int, int] = {}

    def first_line(self, serial: int) -> int | None:
        if serial < len(self._dense):
            return self._dense[serial] or None
        return self._sparse.get(serial)

    def add(self, serial: int, line: int) -> None:
        if serial < self._dense_cap:
            if serial >= len(self._dense):
                size = min(max(serial + 1, 2 * len(self._dense), 1024), self._dense_cap)
                self._dense.frombytes(bytes(self._dense.itemsize * (size - len(self._dense))))
            self._dense[serial] = line
        else:
            self._sparse[serial] = line


def _split_urls(cell: str) -> list[str]:
    """Split an image-URL cell; see the module docstring for why commas are not always splits."""
    urls: list[str] = []
    for token in cell.split():
        parts = _URL_SPLIT.split(token)  # [piece, separator, piece, separator, ...]
        current: str | None = None
        for index in range(0, len(parts), 2):
            piece = parts[index]
            if not piece:
                if current is not None:
                    urls.append(current)
                current = None
            elif current is not None and not _SCHEME_START.match(piece):
                current += parts[index - 1] + piece
            else:
                if current is not None:
                    urls.append(current)
                current = piece
        if current is not None:
            urls.append(current)
    return urls


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
        self, lines: _Lines, layout: _Layout, delimiter: str, encoding: str, limits: SheetLimits
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
    def column_roles(self) -> list[tuple[str, str | None]]:
        """Named header columns in input order, each with its canonical role (None: extra)."""
        layout = self._layout
        roles = {layout.serial: SERIAL_COLUMN, layout.name: NAME_COLUMN, layout.urls: URLS_COLUMN}
        return [(name, roles.get(index)) for index, name in enumerate(layout.columns) if name]

    def _iter_records(self) -> Iterator[tuple[int, list[str] | None, str]]:
        """Yield (start line, cells or None, csv problem) for each non-blank record."""
        reader = _csv_reader(self._lines, self.delimiter)
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
                cells = [cell.strip() for cell in record]
                if not any(cells):
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
        serials = _SerialIndex(self._limits.max_rows)
        position = 0
        for start, cells, problem in itertools.chain((first,), self._records):
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

    def _record(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(error)

    def _validate(
        self, line: int, position: int, cells: list[str], serials: _SerialIndex
    ) -> tuple[SheetRow | None, list[tuple[str, str]]]:
        layout = self._layout
        problems: list[tuple[str, str]] = []
        width = len(layout.columns)
        if len(cells) > width and any(cells[width:]):
            problems.append(("", f"row has {len(cells)} cells but the header has {width} columns"))
        if len(cells) < width:
            cells = cells + [""] * (width - len(cells))

        serial = _parse_serial(cells[layout.serial], problems)
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

        name = cells[layout.name]
        if not name:
            problems.append((NAME_COLUMN, "product name is empty"))

        urls = _check_urls(cells[layout.urls], self._limits, problems)
        if problems or serial is None:
            return None, problems
        extra = {column: cells[index] for index, column in layout.extras}
        return SheetRow(line, position, serial, name, urls, extra), problems


def _parse_serial(value: str, problems: list[tuple[str, str]]) -> int | None:
    if not value:
        problems.append((SERIAL_COLUMN, "serial number is empty"))
        return None
    if not _DIGITS.fullmatch(value) or len(value) > 30:
        problems.append(
            (SERIAL_COLUMN, f"serial number must be a positive integer, got {_show(value)}")
        )
        return None
    serial = int(value)
    if serial == 0:
        problems.append(
            (SERIAL_COLUMN, f"serial number must be a positive integer, got {_show(value)}")
        )
        return None
    if serial > _MAX_SERIAL:
        problems.append((SERIAL_COLUMN, f"serial number is too large, got {_show(value)}"))
        return None
    return serial


def _check_urls(cell: str, limits: SheetLimits, problems: list[tuple[str, str]]) -> list[str]:
    urls = _split_urls(cell)
    if not urls:
        problems.append((URLS_COLUMN, "no image URL given"))
        return urls
    if len(urls) > limits.max_urls_per_row:
        problems.append(
            (URLS_COLUMN, f"too many URLs: {len(urls)} (max {limits.max_urls_per_row})")
        )
        return urls
    for number, url in enumerate(urls, start=1):
        reason = _url_problem(url, limits)
        if reason is not None:
            problems.append((URLS_COLUMN, f"URL {number} {reason}"))
    return urls


# One regex scan instead of a Python loop per character: it was a large share of upload CPU.
_URL_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PORT = 65535


# The shape nearly every sheet URL has: http(s), a plain host name or IPv4 address, an optional
# port, then anything without whitespace. A URL of this shape passes every check below, so it
# skips urlsplit, which was 60 % of the time to validate a 100k-row sheet; anything else
# (userinfo, IPv6, IDN, spaces...) takes the full path and gets its specific error.
_PLAIN_URL = re.compile(r"(?i:https?)://[A-Za-z0-9.-]+(?::(?P<port>[0-9]{1,5}))?(?:[/?#]\S*)?")


def _url_problem(url: str, limits: SheetLimits) -> str | None:
    if len(url) > limits.max_url_length:
        return f"is longer than {limits.max_url_length} characters"
    if _URL_CONTROL_CHARS.search(url):
        return f"contains control characters: {_show(url)}"
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None and int(plain["port"] or 0) <= _MAX_PORT:
        return _host_problem(url, limits)
    return _parsed_url_problem(url, limits)


def _parsed_url_problem(url: str, limits: SheetLimits) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return f"is not a valid URL: {_show(url)}"
    if parts.scheme.lower() not in ("http", "https") or not url[len(parts.scheme) :].startswith(
        "://"
    ):
        return f"is not an absolute http(s) URL: {_show(url)}"
    if not parts.hostname:
        return f"has no host: {_show(url)}"
    return _host_problem(url, limits)


def _host_problem(url: str, limits: SheetLimits) -> str | None:
    if limits.url_check is not None:
        reason = limits.url_check(url)
        if reason is not None:
            return f"is not allowed ({reason}): {_show(url)}"
    return None


# --------------------------------------------------------------------------------------------
# Entry point


def open_sheet(stream: BinaryIO, limits: SheetLimits) -> SheetReader:
    """Check the file, read its header and first data row; raise SheetFormatError if unusable.

    ``stream`` must be seekable (it is read twice: once to decide the encoding and rule out
    binary content, once to parse). It is left open.
    """
    codec, reported, start = _detect_encoding(stream)
    lines = _Lines(stream, codec, start)
    forced: str | None = None
    header: list[str] = []
    for line in lines:
        if not header and _is_blank_line(line):
            continue
        sep = None if header or forced else _SEP_LINE.fullmatch(line)
        if sep is not None and sep.group(1) in _DELIMITERS:
            forced = sep.group(1)
            continue
        header.append(line)
        if _quotes_balanced("".join(header)):
            break
        if len(header) >= _MAX_HEADER_LINES:
            raise SheetFormatError("the header line has an unclosed quote")
    if not header:
        raise SheetFormatError("the file has no header line: it contains only blank lines")
    if not _quotes_balanced("".join(header)):
        raise SheetFormatError("the header line has an unclosed quote")
    delimiter, layout = _choose_delimiter(header, forced)
    return SheetReader(lines, layout, delimiter, reported, limits)
