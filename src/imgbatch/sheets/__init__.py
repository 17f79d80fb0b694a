"""The sheet reader: streaming parse and validation of uploaded product sheets.

A product sheet is a CSV (or Excel "Unicode text") file with three required columns::

    S. No.,Product Name,Input Image Urls
    1,SKU1,"https://a.example/img1.jpg,https://a.example/img2.jpg"

A header with Shopify's product CSV columns (``Handle``, ``Image Src``, ...) and not the three
above is read as Shopify's layout instead: one product per handle, cells kept exactly as read
(:mod:`imgbatch.sheets.shopify`).

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
  giving two columns that both mean the same required column, is a whole-file error. More than
  ``SheetLimits.max_columns`` named columns is a whole-file error too.
* Only non-empty extra cells are kept (a missing one is an empty cell in the result). A row
  whose extra cells, with their column names, take more than ``SheetLimits.max_extra_bytes``
  bytes of UTF-8 is invalid: both are stored with every row.
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

from imgbatch.sheets.cells import neutralize_cell
from imgbatch.sheets.reader import SheetReader, open_sheet
from imgbatch.sheets.types import (
    NAME_COLUMN,
    SERIAL_COLUMN,
    URLS_COLUMN,
    RowError,
    SheetFormatError,
    SheetLimits,
    SheetRow,
    utf8_length,
)

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
    "utf8_length",
]
