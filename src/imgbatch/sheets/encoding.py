"""Encoding detection and physical lines: decide how to decode the whole file before any row.

A BOM decides UTF-8 / UTF-16 (UTF-32 is refused with a hint). Otherwise the file is UTF-8 if
every byte decodes as UTF-8, else Windows-1252. Binary content (a known magic number, any NUL,
or mostly control characters) is refused.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import BinaryIO, Final

from imgbatch.sheets.types import SheetFormatError

_CHUNK: Final = 64 * 1024
# A physical line this long is not a product sheet; the cap keeps a newline-free binary or a
# giant one-line file from being materialised as a single str.
_MAX_LINE_CHARS: Final = 1024 * 1024
# Share of control characters in the first chunk above which the file is called binary.
_CONTROL_RATIO: Final = 0.10

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


def detect_encoding(stream: BinaryIO) -> tuple[str, str, int]:
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


class Lines:
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
