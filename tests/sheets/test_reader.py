"""Product-sheet parsing: encodings, delimiters, header forms, row rules, limits, streaming."""

from __future__ import annotations

import codecs
import csv
import io
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgbatch.sheets import (
    NAME_COLUMN,
    SERIAL_COLUMN,
    URLS_COLUMN,
    RowError,
    SheetFormatError,
    SheetLimits,
    SheetReader,
    SheetRow,
    neutralize_cell,
    open_sheet,
)
from imgbatch.sheets.rows import _check_each_url, _parsed_url_problem, check_urls, url_problem

HEADER = "S. No.,Product Name,Input Image Urls\n"
URL = "https://a.example/img.jpg"


def _open(data: bytes | str, limits: SheetLimits | None = None) -> SheetReader:
    raw = data.encode() if isinstance(data, str) else data
    return open_sheet(io.BytesIO(raw), limits or SheetLimits())


def _read(
    data: bytes | str, limits: SheetLimits | None = None
) -> tuple[SheetReader, list[SheetRow]]:
    reader = _open(data, limits)
    return reader, list(reader.rows())


def _errors(data: bytes | str, limits: SheetLimits | None = None) -> list[RowError]:
    reader, _ = _read(data, limits)
    assert reader.error_count == len(reader.errors)
    return reader.errors


def _format_error(data: bytes | str, limits: SheetLimits | None = None) -> str:
    with pytest.raises(SheetFormatError) as caught:
        _read(data, limits)
    assert caught.value.message == str(caught.value)
    return caught.value.message


# --------------------------------------------------------------------------------------------
# The happy path


def test_parses_the_documented_example() -> None:
    reader, rows = _read(
        "S. No.,Product Name,Input Image Urls\n"
        '1,SKU1,"https://a.example/img1.jpg,https://a.example/img2.jpg,https://a.example/img3.jpg"\n'
        '2,SKU2,"https://b.example/x.png"\n'
    )
    assert reader.columns == ["S. No.", "Product Name", "Input Image Urls"]
    assert reader.extra_columns == []
    assert (reader.encoding, reader.delimiter) == ("utf-8", ",")
    assert rows == [
        SheetRow(
            line=2,
            position=0,
            serial_number=1,
            product_name="SKU1",
            image_urls=[
                "https://a.example/img1.jpg",
                "https://a.example/img2.jpg",
                "https://a.example/img3.jpg",
            ],
            extra={},
        ),
        SheetRow(3, 1, 2, "SKU2", ["https://b.example/x.png"], {}),
    ]
    assert (reader.errors, reader.error_count, reader.invalid_row_count) == ([], 0, 0)


def test_positions_are_dense_over_valid_rows() -> None:
    _, rows = _read(HEADER + f"1,A,{URL}\n2,,{URL}\n3,C,{URL}\n")
    assert [(r.serial_number, r.position, r.line) for r in rows] == [(1, 0, 2), (3, 1, 4)]


def test_cells_and_urls_are_trimmed() -> None:
    _, rows = _read(HEADER + f' 7 ,  Blue mug  ,"  {URL} ,\n  https://b.example/2.png  "\n')
    assert rows[0].serial_number == 7
    assert rows[0].product_name == "Blue mug"
    assert rows[0].image_urls == [URL, "https://b.example/2.png"]


def test_stream_is_left_open_and_may_start_mid_file() -> None:
    stream = io.BytesIO(b"junk before" + (HEADER + f"1,A,{URL}\n").encode())
    stream.seek(len(b"junk before"))
    reader = open_sheet(stream, SheetLimits())
    assert len(list(reader.rows())) == 1
    assert not stream.closed


def test_rows_can_only_be_iterated_once() -> None:
    reader = _open(HEADER + f"1,A,{URL}\n")
    list(reader.rows())
    with pytest.raises(RuntimeError):
        reader.rows()


# --------------------------------------------------------------------------------------------
# Header


@pytest.mark.parametrize(
    "header",
    [
        "S. No.,Product Name,Input Image Urls",
        "s.no,product name,input image urls",
        "SNo,Product,Image Urls",
        "Serial Number,Name,Input Image URLs",
        "Serial No,PRODUCT_NAME,input_image_urls",
        "Serial,product-name,Images",
        "  S. No.  ,  Product Name , Input Image Urls  ",
        "\ufeffS.No.,Product Name,Image URL",
        '"S. No.","Product Name","Input Image Urls"',
        "Sl. No.,Product Name,URLs",
        "Sr No,Product Name,Image Links",
    ],
)
def test_header_forms_are_recognised(header: str) -> None:
    reader, rows = _read(f"{header}\n1,A,{URL}\n")
    assert [(r.serial_number, r.product_name, r.image_urls) for r in rows] == [(1, "A", [URL])]
    assert reader.extra_columns == []


def test_header_columns_in_any_order_with_extras_kept_in_order() -> None:
    reader, rows = _read(
        f"Brand,Input Image Urls, Colour ,S. No.,Product Name,notes\nAcme,{URL},red,4,Mug,fragile\n"
    )
    assert reader.columns == [
        "Brand",
        "Input Image Urls",
        "Colour",
        "S. No.",
        "Product Name",
        "notes",
    ]
    assert reader.extra_columns == ["Brand", "Colour", "notes"]
    assert list(rows[0].extra.items()) == [
        ("Brand", "Acme"),
        ("Colour", "red"),
        ("notes", "fragile"),
    ]
    assert rows[0].serial_number == 4


def test_empty_extra_values_are_not_stored() -> None:
    # The result CSV writes a missing extra as an empty cell, so storing "" would only cost.
    _, rows = _read(
        f"S. No.,Product Name,Input Image Urls,Notes,Brand\n1,A,{URL},,Acme\n2,B,{URL}\n"
    )
    assert [row.extra for row in rows] == [{"Brand": "Acme"}, {}]


def test_too_many_named_columns_is_a_whole_file_error_that_names_the_cap() -> None:
    limits = SheetLimits(max_columns=100)
    extras = ",".join(f"c{i}" for i in range(97))
    reader, _ = _read(f"S. No.,Product Name,Input Image Urls,{extras}\n1,A,{URL}\n", limits)
    assert len(reader.extra_columns) == 97
    message = _format_error(
        f"S. No.,Product Name,Input Image Urls,{extras},c97\n1,A,{URL}\n", limits
    )
    assert message == "too many columns: the header has 101 named columns; the limit is 100"


def test_column_cap_counts_named_columns_only() -> None:
    # Excel exports trailing unnamed columns far out; they are ignored and cost nothing.
    unnamed = "," * 5000
    reader, rows = _read(
        f"S. No.,Product Name,Input Image Urls{unnamed}\n1,A,{URL}{unnamed}\n",
        SheetLimits(max_columns=3),
    )
    assert (len(rows), reader.errors, rows[0].extra) == (1, [], {})


def test_a_150k_column_header_is_refused_quickly_with_a_short_message() -> None:
    extras = ",".join(f"c{i}" for i in range(150_000))
    body = f"S. No.,Product Name,Input Image Urls,{extras}\n" + "".join(
        f"{i},P{i},{URL}\n" for i in range(1, 21)
    )
    assert len(body) > 900_000
    message = _format_error(body)
    assert "150003 named columns" in message
    assert len(message) < 200


def test_extra_cells_over_the_byte_cap_are_a_row_error() -> None:
    limits = SheetLimits(max_extra_bytes=40)
    header = "S. No.,Product Name,Input Image Urls,Notes,Brand\n"
    # The column names count too: they are stored with every row's values.
    fits = f"1,A,{URL},{'n' * 26},Acme\n"  # Notes 5 + 26, Brand 5 + 4 = 40 bytes
    accented = "\u00e9" * 14  # é is 2 bytes in UTF-8: 5 + 28, Brand 5 + 4 = 42 bytes
    over = f"2,B,{URL},{accented},Acme\n"
    reader, rows = _read(header + fits + over, limits)
    assert [row.serial_number for row in rows] == [1]
    assert reader.errors == [
        RowError(
            3, "", "the extra columns of this row hold 42 bytes; the limit is 40 bytes per row"
        )
    ]


def test_unnamed_columns_are_ignored() -> None:
    reader, rows = _read(f"S. No.,Product Name,Input Image Urls,,\n1,A,{URL},,whatever\n")
    assert reader.extra_columns == []
    assert rows[0].extra == {}
    assert reader.errors == []


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("S. No.,Product Name,Photos", ["'Input Image Urls'"]),
        ("Product Name,Input Image Urls", ["'S. No.'"]),
        ("Id,Title,Photos", ["'S. No.'", "'Product Name'", "'Input Image Urls'"]),
    ],
)
def test_missing_required_columns_are_named_with_the_header_seen(
    header: str, missing: list[str]
) -> None:
    message = _format_error(f"{header}\n1,A,{URL}\n")
    assert message.startswith("missing required column")
    for name in missing:
        assert name in message
    for seen in header.split(","):
        assert repr(seen) in message


def test_two_columns_meaning_the_same_thing_are_refused() -> None:
    message = _format_error(f"S. No.,Product,Product Name,Input Image Urls\n1,A,B,{URL}\n")
    assert "'Product'" in message
    assert "'Product Name'" in message


def test_repeated_extra_column_is_refused() -> None:
    message = _format_error(f"S. No.,Product Name,Input Image Urls,Note,Note\n1,A,{URL},x,y\n")
    assert "'Note'" in message


def test_header_messages_do_not_echo_a_huge_header() -> None:
    # 1 MB of header in must not mean 1 MB of error message out.
    columns = ",".join(f"{i}{'x' * 20_000}" for i in range(50))
    missing = _format_error(f"{columns}\n1,A,{URL}\n")
    assert missing.startswith("missing required columns: 'S. No.', 'Product Name'")
    assert "50 columns" in missing
    assert len(missing) < 400
    repeated = _format_error(
        f"S. No.,Product Name,Input Image Urls,{'n' * 100_000},{'n' * 100_000}\n1,A,{URL},x,y\n"
    )
    assert len(repeated) < 200
    doubled = _format_error(
        f"S. No.,Product,Product {' ' * 100_000}Name,Input Image Urls\n1,A,B,{URL}\n"
    )
    assert len(doubled) < 300


def test_blank_lines_before_the_header_are_skipped_and_lines_stay_physical() -> None:
    _, rows = _read(f"\n\n{HEADER}1,A,{URL}\n")
    assert rows[0].line == 4


# --------------------------------------------------------------------------------------------
# Delimiters


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_each_delimiter_is_detected(delimiter: str) -> None:
    text = delimiter.join(["S. No.", "Product Name", "Input Image Urls", "Notes"]) + "\n"
    text += delimiter.join(["1", "A", f'"{URL}, https://b.example/2.jpg"', "x"]) + "\n"
    reader, rows = _read(text)
    assert reader.delimiter == delimiter
    assert rows[0].image_urls == [URL, "https://b.example/2.jpg"]
    assert rows[0].extra == {"Notes": "x"}


def test_semicolon_file_with_quoted_commas_in_the_header_and_url_cell() -> None:
    # More commas than semicolons overall, but only the semicolons are outside quotes.
    reader, rows = _read(
        'S. No.;Product Name;Input Image Urls;"Size, colour, material"\n'
        '1;Mug;"https://a.example/1.jpg,https://a.example/2.jpg,https://a.example/3.jpg";"L, red"\n'
    )
    assert reader.delimiter == ";"
    assert reader.extra_columns == ["Size, colour, material"]
    assert len(rows[0].image_urls) == 3
    assert rows[0].extra == {"Size, colour, material": "L, red"}


def test_delimiter_that_yields_the_required_columns_wins_over_a_raw_count() -> None:
    reader, rows = _read(f"S. No.;Product Name;Input Image Urls;a,b,c,d\n1;A;{URL};x\n")
    assert reader.delimiter == ";"
    assert reader.extra_columns == ["a,b,c,d"]
    assert rows[0].serial_number == 1


def test_excel_sep_line_selects_the_delimiter() -> None:
    reader, rows = _read(f"sep=;\nS. No.;Product Name;Input Image Urls\n1;A;{URL}\n")
    assert reader.delimiter == ";"
    assert rows[0].line == 3


# --------------------------------------------------------------------------------------------
# Encodings


def test_utf8_with_bom() -> None:
    reader, rows = _read(codecs.BOM_UTF8 + (HEADER + f"1,Crème brûlée,{URL}\n").encode())
    assert reader.encoding == "utf-8-sig"
    assert reader.columns[0] == "S. No."
    assert rows[0].product_name == "Crème brûlée"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom_tab_separated_like_excel_unicode_text(codec: str) -> None:
    text = (
        "S. No.\tProduct Name\tInput Image Urls\r\n"
        f"1\tTasse à café ☕\t{URL}\r\n"
        f'2\t"Two\r\nlines"\t"{URL},https://b.example/2.jpg"\r\n'
        f"x\tBad\t{URL}\r\n"
    )
    bom = {"utf-16": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    reader, rows = _read(bom[codec] + text.encode(codec))
    assert (reader.encoding, reader.delimiter) == ("utf-16", "\t")
    assert [(r.line, r.product_name) for r in rows] == [(2, "Tasse à café ☕"), (3, "Two\r\nlines")]
    assert rows[1].image_urls == [URL, "https://b.example/2.jpg"]
    assert [(e.line, e.column) for e in reader.errors] == [(5, SERIAL_COLUMN)]


def test_cp1252_fallback_when_not_utf8() -> None:
    data = (HEADER + f"1,Café “deluxe” \u2013 5€,{URL}\n").encode("cp1252")
    reader, rows = _read(data)
    assert reader.encoding == "cp1252"
    assert rows[0].product_name == "Café “deluxe” \u2013 5€"


def test_cp1252_decided_over_the_whole_file_not_the_first_chunk() -> None:
    rows_text = "".join(f"{i},Plain {i},{URL}\n" for i in range(1, 5000))
    data = (HEADER + rows_text).encode() + f"5000,Café,{URL}\n".encode("cp1252")
    assert len(data) > 200_000
    reader, rows = _read(data)
    assert reader.encoding == "cp1252"
    assert rows[-1].product_name == "Café"
    assert len(rows) == 5000


def test_bytes_that_are_neither_utf8_nor_cp1252_are_refused() -> None:
    message = _format_error((HEADER + "1,A").encode() + b"\xc3\x81\x81" + f",{URL}\n".encode())
    assert "UTF-8" in message
    assert "Windows-1252" in message


def test_utf32_is_refused_with_a_hint() -> None:
    assert "UTF-32" in _format_error((HEADER + f"1,A,{URL}\n").encode("utf-32"))


def test_invalid_utf16_is_refused() -> None:
    data = codecs.BOM_UTF16_LE + HEADER.encode("utf-16-le") + b"\x00\xd8A\x00"  # lone surrogate
    assert "UTF-16" in _format_error(data)


# --------------------------------------------------------------------------------------------
# Whole-file problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"\n\n  \r\n\t\n", "only blank lines"),
        (b",,,\n;;\n", "only blank lines"),
        (HEADER.encode(), "no data rows"),
        ((HEADER + "\n\n,,\n").encode(), "no data rows"),
    ],
)
def test_empty_sheets_are_refused(data: bytes, expected: str) -> None:
    assert expected in _format_error(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
        (b"PK\x03\x04\x14\x00\x06\x00", "ZIP"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", ".xls"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
    ],
)
def test_binary_formats_are_named(data: bytes, expected: str) -> None:
    assert expected in _format_error(data)


def test_nul_byte_anywhere_is_refused() -> None:
    body = "".join(f"{i},P{i},{URL}\n" for i in range(1, 3000))
    data = (HEADER + body).encode() + b"3000,\x00,x\n"
    message = _format_error(data)
    assert "NUL" in message
    assert str(len((HEADER + body).encode()) + 5) in message


def test_utf16_without_bom_gets_a_hint() -> None:
    assert "UTF-16 without a byte-order mark" in _format_error(HEADER.encode("utf-16-le") * 3)


def test_control_character_soup_is_refused() -> None:
    assert "control characters" in _format_error(bytes(range(1, 32)) * 10)


def test_stray_control_characters_in_text_are_tolerated() -> None:
    _, rows = _read(HEADER + f"1,Mug\x0bwith VT,{URL}\n")
    assert rows[0].product_name == "Mug\x0bwith VT"


def test_row_cap_stops_early_and_names_the_cap() -> None:
    limits = SheetLimits(max_rows=3)
    reader = _open(HEADER + "".join(f"{i},P,{URL}\n" for i in range(1, 6)), limits)
    seen: list[int] = []
    with pytest.raises(SheetFormatError) as caught:
        seen.extend(row.serial_number for row in reader.rows())
    assert seen == [1, 2, 3]
    assert "more than 3 data rows" in caught.value.message
    assert "line 5" in caught.value.message


def test_row_cap_counts_invalid_rows_but_not_blank_ones() -> None:
    limits = SheetLimits(max_rows=3)
    _, rows = _read(HEADER + f"1,P,{URL}\n\n,,\n2,,{URL}\n\n3,P,{URL}\n", limits)
    assert [r.serial_number for r in rows] == [1, 3]
    assert "more than 2" in _format_error(
        HEADER + f"1,P,{URL}\n2,,\n3,P,{URL}\n", SheetLimits(max_rows=2)
    )


def test_unclosed_quote_is_a_whole_file_error_at_its_line() -> None:
    message = _format_error(HEADER + f'1,A,{URL}\n2,"B,{URL}\n3,C,{URL}\n')
    assert message.startswith("line 3:")
    assert "never closed" in message


def test_overlong_line_is_refused() -> None:
    message = _format_error(HEADER + "1,A," + "x" * (1024 * 1024 + 10))
    assert "line 2 is longer than" in message


def test_huge_quoted_cell_is_refused() -> None:
    message = _format_error(HEADER + '1,"' + "word\n" * 40_000 + f'",{URL}\n')
    assert message.startswith("line 2:")


# --------------------------------------------------------------------------------------------
# Row rules and exact line numbers


def test_line_numbers_count_physical_lines_of_multiline_cells() -> None:
    data = (
        HEADER  # 1
        + f'1,"Mug\nwith\nthree lines",{URL}\n'  # 2-4
        + "\n"  # 5 (blank)
        + f'2,"Plate","{URL},\n\n {URL}"\n'  # 6-8
        + f"abc,Bad,{URL}\n"  # 9
        + ",,\n"  # 10 (all empty)
        + f"4,,{URL}\n"  # 11
    )
    reader, rows = _read(data)
    assert [(r.line, r.serial_number) for r in rows] == [(2, 1), (6, 2)]
    assert rows[1].image_urls == [URL, URL]
    assert [(e.line, e.column) for e in reader.errors] == [(9, SERIAL_COLUMN), (11, NAME_COLUMN)]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_line_numbers_with_crlf_and_bare_cr(newline: str) -> None:
    text = HEADER + f'1,"A\nB",{URL}\n' + f"x,C,{URL}\n"
    reader, rows = _read(text.replace("\n", newline))
    assert rows[0].line == 2
    assert rows[0].product_name == f"A{newline}B"
    assert reader.errors[0].line == 4


def test_crlf_split_across_read_chunks_is_one_line_break() -> None:
    prefix, suffix = HEADER + "1,", "," + URL
    name = "x" * (64 * 1024 - len(prefix) - len(suffix) - 1)  # \r is the chunk's last byte
    text = prefix + name + suffix + "\r\n" + f"2,B,{URL}\r\nbad,C,{URL}\r\n"
    assert text[64 * 1024 - 1] == "\r"
    reader, rows = _read(text)
    assert [r.line for r in rows] == [2, 3]
    assert reader.errors[0].line == 4


@pytest.mark.parametrize("value", ["1.5", "0", "-3", "abc", "+1", "1_000", "1e3", "\u0661", "00"])
def test_serial_must_be_a_positive_integer(value: str) -> None:
    errors = _errors(HEADER + f"{value},A,{URL}\n")
    assert errors == [
        RowError(2, SERIAL_COLUMN, f"serial number must be a positive integer, got {value!r}")
    ]


@pytest.mark.parametrize(("value", "expected"), [(" 7 ", 7), ("007", 7), ("\t12", 12)])
def test_serial_accepts_spaces_and_leading_zeros(value: str, expected: int) -> None:
    _, rows = _read(HEADER + f'"{value}",A,{URL}\n')
    assert rows[0].serial_number == expected


def test_serial_too_large() -> None:
    errors = _errors(HEADER + f"{2**63},A,{URL}\n")
    assert errors[0].reason.startswith("serial number is too large")


def test_empty_serial() -> None:
    assert _errors(HEADER + f",A,{URL}\n") == [RowError(2, SERIAL_COLUMN, "serial number is empty")]


def test_duplicate_serial_is_reported_on_the_second_occurrence() -> None:
    reader, rows = _read(HEADER + f"1,A,{URL}\n2,B,{URL}\n1,C,{URL}\n1,D,{URL}\n")
    assert [r.product_name for r in rows] == ["A", "B"]
    assert reader.errors == [
        RowError(4, SERIAL_COLUMN, "duplicate serial number 1 (first used on line 2)"),
        RowError(5, SERIAL_COLUMN, "duplicate serial number 1 (first used on line 2)"),
    ]


def test_duplicate_of_an_invalid_row_is_still_a_duplicate() -> None:
    errors = _errors(HEADER + f"5,,{URL}\n5,B,{URL}\n")
    assert [(e.line, e.column) for e in errors] == [(2, NAME_COLUMN), (3, SERIAL_COLUMN)]
    assert "line 2" in errors[1].reason


def test_large_and_sparse_serials_are_checked_for_duplicates() -> None:
    big = 10**15
    errors = _errors(HEADER + f"{big},A,{URL}\n3,B,{URL}\n{big},C,{URL}\n")
    assert errors == [
        RowError(4, SERIAL_COLUMN, f"duplicate serial number {big} (first used on line 2)")
    ]


def test_empty_product_name() -> None:
    assert _errors(HEADER + f'1,"   ",{URL}\n') == [
        RowError(2, NAME_COLUMN, "product name is empty")
    ]


def test_every_problem_in_a_row_is_reported() -> None:
    reader, _ = _read(HEADER + "x,,\n")
    assert [(e.line, e.column) for e in reader.errors] == [
        (2, SERIAL_COLUMN),
        (2, NAME_COLUMN),
        (2, URLS_COLUMN),
    ]
    assert reader.invalid_row_count == 1


def test_fewer_cells_than_header_means_missing_cells_are_empty() -> None:
    errors = _errors(HEADER + "1,A\n")
    assert errors == [RowError(2, URLS_COLUMN, "no image URL given")]


def test_more_cells_than_header_is_a_row_error() -> None:
    errors = _errors(HEADER + f"1,A,{URL},surprise\n")
    assert errors == [RowError(2, "", "row has 4 cells but the header has 3 columns")]


def test_surplus_empty_cells_are_ignored() -> None:
    _, rows = _read(HEADER + f"1,A,{URL},,  ,\n")
    assert len(rows) == 1


def test_text_after_a_closing_quote_is_a_row_error_and_parsing_resumes() -> None:
    reader, rows = _read(HEADER + f'1,"A"B,{URL}\n2,C,{URL}\n')
    assert [r.line for r in rows] == [3]
    assert [(e.line, e.column) for e in reader.errors] == [(2, "")]
    assert reader.errors[0].reason.startswith("malformed quoting")


# --------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("ftp://x", "URL 1 is not an absolute http(s) URL: 'ftp://x'"),
        ("/images/1.jpg", "URL 1 is not an absolute http(s) URL: '/images/1.jpg'"),
        ("www.example.com/1.jpg", "URL 1 is not an absolute http(s) URL: 'www.example.com/1.jpg'"),
        ("http:example.com", "URL 1 is not an absolute http(s) URL: 'http:example.com'"),
        ("javascript://alert(1)", "URL 1 is not an absolute http(s) URL: 'javascript://alert(1)'"),
        ("http:///nohost.jpg", "URL 1 has no host: 'http:///nohost.jpg'"),
        ("https://a.example:99999/x", "URL 1 is not a valid URL: 'https://a.example:99999/x'"),
        ("https://[::1/x", "URL 1 is not a valid URL: 'https://[::1/x'"),
        (
            "https://a.example/\x01.jpg",
            "URL 1 contains control characters: 'https://a.example/\\x01.jpg'",
        ),
    ],
)
def test_invalid_urls(cell: str, reason: str) -> None:
    assert _errors(HEADER + f'1,A,"{cell}"\n') == [RowError(2, URLS_COLUMN, reason)]


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@a.example/x.jpg",
        "https://user@a.example/x.jpg",
        "https://:hunter2@a.example/x.jpg",
        "HTTP://u:hunter2@a.example:8080/x.jpg",
    ],
)
def test_urls_with_credentials_are_refused_without_echoing_them(url: str) -> None:
    assert _errors(HEADER + f'1,A,"{URL},{url}"\n') == [
        RowError(
            2,
            URLS_COLUMN,
            "URL 2 has a user name or password in it (user:password@host); image downloads "
            "never send credentials, so it could never be fetched",
        )
    ]


def test_url_numbers_point_at_the_bad_url() -> None:
    errors = _errors(HEADER + f'1,A,"{URL},ftp://x, {URL}, mailto:x@y"\n')
    assert [e.reason for e in errors] == [
        "URL 2 is not an absolute http(s) URL: 'ftp://x'",
        "URL 4 is not an absolute http(s) URL: 'mailto:x@y'",
    ]


def test_url_length_limit() -> None:
    limits = SheetLimits(max_url_length=2048)
    ok = "https://a.example/" + "x" * (2048 - 18)
    too_long = ok + "y"
    assert len(ok) == 2048
    reader, rows = _read(HEADER + f'1,A,"{ok}"\n2,B,"{URL},{too_long}"\n', limits)
    assert [r.serial_number for r in rows] == [1]
    assert reader.errors == [RowError(3, URLS_COLUMN, "URL 2 is longer than 2048 characters")]


def test_too_many_urls() -> None:
    cell = ",".join(f"https://a.example/{i}.jpg" for i in range(25))
    assert _errors(HEADER + f'1,A,"{cell}"\n') == [
        RowError(2, URLS_COLUMN, "too many URLs: 25 (max 20)")
    ]
    cell = ",".join(f"https://a.example/{i}.jpg" for i in range(20))
    _, rows = _read(HEADER + f'1,A,"{cell}"\n')
    assert len(rows[0].image_urls) == 20


@pytest.mark.parametrize(
    ("cell", "urls"),
    [
        (
            "https://a.example/1.jpg,https://a.example/2.jpg",
            ["https://a.example/1.jpg", "https://a.example/2.jpg"],
        ),
        (
            "https://a.example/1.jpg , https://a.example/2.jpg ,",
            ["https://a.example/1.jpg", "https://a.example/2.jpg"],
        ),
        (
            "https://a.example/1.jpg\nhttps://a.example/2.jpg",
            ["https://a.example/1.jpg", "https://a.example/2.jpg"],
        ),
        (
            "https://a.example/1.jpg;https://a.example/2.jpg",
            ["https://a.example/1.jpg", "https://a.example/2.jpg"],
        ),
        # CDN transforms use commas inside one URL.
        (
            "https://res.example/image/upload/w_100,h_100,c_fill/1.jpg",
            ["https://res.example/image/upload/w_100,h_100,c_fill/1.jpg"],
        ),
        (
            "https://a.example/x?size=1,2,https://b.example/y",
            ["https://a.example/x?size=1,2", "https://b.example/y"],
        ),
        ("HTTPS://A.EXAMPLE/1.JPG", ["HTTPS://A.EXAMPLE/1.JPG"]),
        (
            "https://a.example/1.jpg,https://a.example/1.jpg",
            ["https://a.example/1.jpg", "https://a.example/1.jpg"],
        ),
    ],
)
def test_url_cell_splitting(cell: str, urls: list[str]) -> None:
    _, rows = _read(HEADER + f'1,A,"{cell}"\n')
    assert rows[0].image_urls == urls


def test_empty_url_cell() -> None:
    assert _errors(HEADER + '1,A," , ,"\n') == [RowError(2, URLS_COLUMN, "no image URL given")]


def test_url_check_hook_rejects_with_its_reason() -> None:
    def private_literal(url: str) -> str | None:
        return "private address" if "://10." in url or "://127." in url else None

    limits = SheetLimits(url_check=private_literal)
    reader, rows = _read(
        HEADER + f'1,A,"{URL},http://10.0.0.1/x.jpg"\n2,B,{URL}\n3,C,ftp://127.0.0.1/\n', limits
    )
    assert [r.serial_number for r in rows] == [2]
    assert reader.errors == [
        RowError(2, URLS_COLUMN, "URL 2 is not allowed (private address): 'http://10.0.0.1/x.jpg'"),
        # The hook only sees URLs that are already well-formed http(s).
        RowError(4, URLS_COLUMN, "URL 1 is not an absolute http(s) URL: 'ftp://127.0.0.1/'"),
    ]


def test_long_values_are_truncated_in_reasons() -> None:
    errors = _errors(HEADER + f"{'a' * 500},A,{URL}\n")
    assert len(errors[0].reason) < 120


# --------------------------------------------------------------------------------------------
# Error cap


def test_error_list_is_capped_but_the_count_is_not() -> None:
    body = "".join(f"{i},,{URL}\n" for i in range(1, 151)) + f"151,ok,{URL}\n"
    reader, rows = _read(body.join([HEADER, ""]))
    assert len(rows) == 1
    assert len(reader.errors) == 100
    assert reader.error_count == 150
    assert reader.invalid_row_count == 150
    assert reader.errors[0] == RowError(2, NAME_COLUMN, "product name is empty")
    assert reader.errors[-1].line == 101


# --------------------------------------------------------------------------------------------
# neutralize_cell


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1+1", "'+1+1"),
        ("-3", "'-3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("", ""),
        ("Mug", "Mug"),
        ("1-2", "1-2"),
        (" =1", " =1"),
        ("'=already", "'=already"),
        ("https://a.example/x.jpg", "https://a.example/x.jpg"),
    ],
)
def test_neutralize_cell(value: str, expected: str) -> None:
    assert neutralize_cell(value) == expected


# --------------------------------------------------------------------------------------------
# Properties


def _exercise(data: bytes) -> None:
    try:
        reader = open_sheet(io.BytesIO(data), SheetLimits(max_rows=50, max_urls_per_row=3))
    except SheetFormatError:
        return
    try:
        rows = list(reader.rows())
    except SheetFormatError:
        return
    assert reader.error_count >= len(reader.errors)
    assert len(reader.errors) <= 100
    for index, row in enumerate(rows):
        assert row.position == index
        assert row.serial_number > 0
        assert row.product_name == row.product_name.strip() != ""
        assert 1 <= len(row.image_urls) <= 3
        assert all(url.lower().startswith(("http://", "https://")) for url in row.image_urls)
        assert list(row.extra) == reader.extra_columns
    assert len({row.serial_number for row in rows}) == len(rows)
    lines = [row.line for row in rows] + [error.line for error in reader.errors]
    assert all(line >= 2 for line in lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_raise_sheet_format_error(data: bytes) -> None:
    _exercise(data)


_FRAGMENT = st.sampled_from(
    [*'ab1 0-.,;\t"\r\n:/é€\x0b', "https://", "http://x.y/", "S. No.", "\ufeff"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.sampled_from(
        [HEADER, HEADER.replace(",", ";"), HEADER.replace(",", "\t"), "S.No,Name,Images,Extra\n"]
    ),
    body=st.lists(_FRAGMENT, max_size=200).map("".join),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
)
def test_arbitrary_text_after_a_valid_header_only_raises_sheet_format_error(
    header: str, body: str, encoding: str
) -> None:
    _exercise((header + body).encode(encoding, errors="replace"))


_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(
    products=st.lists(
        st.tuples(
            _NAME,
            st.lists(
                st.from_regex(
                    r"https://[a-z]{1,8}\.example/[a-z0-9_]{0,6}(,[a-z0-9_]{1,6})?", fullmatch=True
                ),
                min_size=1,
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=15,
    ),
    delimiter=st.sampled_from([",", ";", "\t"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_sheets_written_by_csv_writer_round_trip(
    products: list[tuple[str, list[str]]], delimiter: str, encoding: str
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["S. No.", "Product Name", "Input Image Urls", "Note"])
    for serial, (name, urls) in enumerate(products, start=1):
        writer.writerow([serial, name, ", ".join(urls), name])
    reader, rows = _read(out.getvalue().encode(encoding))
    assert reader.errors == []
    assert [(r.serial_number, r.product_name, r.image_urls, r.extra["Note"]) for r in rows] == [
        (serial, name, urls, name) for serial, (name, urls) in enumerate(products, start=1)
    ]


# --------------------------------------------------------------------------------------------
# Streaming


def test_100k_rows_stream_in_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("S. No.,Product Name,Input Image Urls,Brand\n")
        for i in range(1, 100_001):
            handle.write(
                f'{i},Product number {i},"https://cdn.example/p/{i}/front.jpg,'
                f'https://cdn.example/p/{i}/back.jpg",Acme\n'
            )
    assert path.stat().st_size > 9_000_000

    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            reader = open_sheet(stream, SheetLimits())
            count = 0
            last_line = 0
            for row in reader.rows():
                count += 1
                last_line = row.line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (count, last_line, reader.error_count) == (100_000, 100_001, 0)
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# The fast path for plain URLs must never accept what the full parse refuses, or vice versa.
_URLISH = st.text(alphabet="htps:/[]@?#%.-_~ 09azAZ\u00fc\u3000\\", min_size=0, max_size=40)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "ftp", "http:", ""]),
    rest=_URLISH,
    port=st.one_of(st.none(), st.integers(min_value=0, max_value=999_999)),
)
def test_plain_url_fast_path_agrees_with_the_full_parse(
    scheme: str, rest: str, port: int | None
) -> None:
    host, _, tail = rest.partition("/")
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}/{tail}"
    for limits in (SheetLimits(), SheetLimits(url_check=lambda u: "blocked" if "0" in u else None)):
        assert url_problem(url, limits) == _parsed_url_problem(url, limits)


def _zero_in_host(url: str) -> str | None:
    # A url_check judges a plain URL by its host alone (SheetLimits), as the real one does.
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return None
    return "blocked" if "0" in host else None


# The fast path for a whole cell of plain URLs must give the same URLs and the same problems as
# splitting the cell and checking each URL.
_CELLISH = st.text(alphabet="htps:/,;?#.-_ 09az\u00fc\t\x01", min_size=0, max_size=30)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["http://", "https://", "HTTPS://", "ftp://", ""]),
            _CELLISH,
            st.one_of(st.none(), st.integers(min_value=0, max_value=99_999)),
        ),
        min_size=1,
        max_size=4,
    ),
    max_urls=st.sampled_from([1, 2, 20]),
    max_length=st.sampled_from([12, 2048]),
)
def test_plain_cell_fast_path_agrees_with_checking_each_url(
    parts: list[tuple[str, str, int | None]], max_urls: int, max_length: int
) -> None:
    cell = ",".join(
        f"{scheme}{host}{'' if port is None else f':{port}'}{tail}"
        for scheme, rest, port in parts
        for host, tail in [(rest[:8].replace("/", ""), rest[8:])]
    )
    for check in (None, _zero_in_host):
        limits = SheetLimits(max_urls_per_row=max_urls, max_url_length=max_length, url_check=check)
        fast: list[tuple[str, str]] = []
        general: list[tuple[str, str]] = []
        assert check_urls(cell, limits, fast) == _check_each_url(cell, limits, general)
        assert fast == general


def test_a_cell_of_plain_urls_keeps_every_check() -> None:
    limits = SheetLimits(
        max_urls_per_row=2,
        url_check=lambda u: "private" if (urlsplit(u).hostname or "").startswith("10.") else None,
    )
    cases = {
        "http://a.example:65535/x,https://b.example/y?q=1": [],
        "http://a.example:65536/x": ["URL 1 is not a valid URL: 'http://a.example:65536/x'"],
        "http://a.example/x,http://b.example/y,http://c.example/z": ["too many URLs: 3 (max 2)"],
        "http://a.example/x,http://10.0.0.1/y": [
            "URL 2 is not allowed (private): 'http://10.0.0.1/y'"
        ],
        # A URL in a query is not a host; each URL's own host is judged, in the cell's order.
        "http://a.example/r?u=http://10.0.0.9/x,HTTP://10.0.0.1:8080/y": [
            "URL 2 is not allowed (private): 'HTTP://10.0.0.1:8080/y'"
        ],
        "http://10.0.0.1/a,http://10.0.0.1/c": [
            "URL 1 is not allowed (private): 'http://10.0.0.1/a'",
            "URL 2 is not allowed (private): 'http://10.0.0.1/c'",
        ],
    }
    for cell, expected in cases.items():
        problems: list[tuple[str, str]] = []
        check_urls(cell, limits, problems)
        assert [reason for _, reason in problems] == expected, cell
