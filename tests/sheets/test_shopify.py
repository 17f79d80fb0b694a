"""Shopify's product CSV in the sheet reader: detected by its header, rows grouped by Handle,
images ordered by Image Position, every cell kept exactly as read, errors by line and column."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from imgbatch.sheets import SheetFormatError, SheetLimits, SheetRow, open_sheet

EXPORT = Path(__file__).parents[1] / "fixtures" / "shopify" / "products_export.csv"
HEADER = EXPORT.read_text(encoding="utf-8").splitlines()[0]
COLUMNS = HEADER.split(",")


def line(**cells: str) -> str:
    return ",".join(cells.get(name.replace(" ", "_"), "") for name in COLUMNS)


def read(text: str | bytes, limits: SheetLimits | None = None) -> tuple[list[SheetRow], list]:
    data = text.encode() if isinstance(text, str) else text
    reader = open_sheet(io.BytesIO(data), limits or SheetLimits())
    rows = list(reader.rows())
    return rows, [(e.line, e.column, e.reason) for e in reader.errors]


def test_the_documented_export_is_read_as_products() -> None:
    text = EXPORT.read_text(encoding="utf-8").replace("{origin}", "http://shop.example")
    reader = open_sheet(io.BytesIO(text.encode()), SheetLimits())
    rows = list(reader.rows())
    assert reader.errors == []
    assert reader.shopify_header == COLUMNS
    assert [(r.serial_number, r.product_name, r.extra, r.line) for r in rows] == [
        (1, "Example T-Shirt", {"Handle": "example-t-shirt"}, 2),
        (2, "Enamel Mug, 350 ml", {"Handle": "enamel-mug"}, 10),
        (3, "Poster", {"Handle": "broken-poster"}, 11),
        (4, "Gift Card", {"Handle": "gift-card"}, 12),
    ]
    shirt = rows[0]
    assert [u.rsplit("/", 1)[1] for u in shirt.image_urls] == [
        "hubble_deep_field.jpg?shop=small",  # Image Position 1
        "coffee.jpg?shop=front",  # 2
        "chelsea.jpg?shop=back",  # 3
        "astronaut.jpg?shop=large",  # only a Variant Image
    ]
    assert shirt.source_rows is not None and len(shirt.source_rows) == 4
    body = shirt.source_rows[0][COLUMNS.index("Body (HTML)")]
    assert body.startswith('<p>Soft, "heavyweight" cotton') and "\n  <li>100% cotton" in body
    # Not stripped: the cell is written back as it was.
    assert rows[1].source_rows is not None
    assert rows[1].source_rows[0][COLUMNS.index("Variant SKU")] == "  MUG-350"
    assert rows[3].image_urls == []


def test_cells_survive_exactly_bom_crlf_and_spaces_included() -> None:
    body = '"<p>x,\r\ny</p>"'  # quoted, as the file has it
    text = (
        "\ufeff"
        + HEADER
        + "\r\n"
        + line(Handle="a", Title=" Spaced ", Image_Src="http://e/1", **{"Body_(HTML)": body})
        + "\r\n"
    )
    rows, errors = read(text.encode("utf-8"))
    assert errors == []
    assert rows[0].product_name == "Spaced"
    cells = rows[0].source_rows[0]  # type: ignore[index]
    assert cells[COLUMNS.index("Title")] == " Spaced "
    assert cells[COLUMNS.index("Body (HTML)")] == "<p>x,\r\ny</p>"


def test_errors_name_the_shopify_line_and_column() -> None:
    text = "\n".join(
        [
            HEADER,
            line(Handle="a", Title="A", Image_Src="http://e/1.jpg", Image_Position="1"),
            line(Handle="a", Image_Src="http://e/2.jpg", Image_Position="two"),
            line(Handle="b", Title="B", Variant_Image="javascript:alert(1)"),
            line(Title="orphan"),
            line(Handle="a", Image_Src="http://e/3.jpg"),
        ]
    )
    rows, errors = read(text)
    assert rows == []
    assert [(n, column) for n, column, _ in errors] == [
        (3, "Image Position"),
        (4, "Variant Image"),
        (5, "Handle"),
        (6, "Handle"),
    ]
    assert "must be a whole number, got 'two'" in errors[0][2]
    assert "consecutive" in errors[3][2]


def test_a_product_with_too_many_images_is_reported_on_its_first_line() -> None:
    rows_text = [line(Handle="many", Title="Many", Image_Src="http://e/0.jpg")]
    rows_text += [line(Handle="many", Image_Src=f"http://e/{i}.jpg") for i in range(1, 4)]
    rows, errors = read("\n".join([HEADER, *rows_text]), SheetLimits(max_urls_per_row=3))
    assert rows == []
    assert errors == [(2, "Image Src", "handle 'many' has 4 different images (max 3)")]


def test_our_own_layout_wins_over_shopify_names_among_its_extra_columns() -> None:
    rows, errors = read(
        "S. No.,Product Name,Input Image Urls,Handle,Image Src\n1,A,http://e/1,h,x\n"
    )
    assert errors == []
    assert rows[0].source_rows is None
    assert rows[0].extra == {"Handle": "h", "Image Src": "x"}


def test_a_repeated_shopify_column_is_refused() -> None:
    with pytest.raises(SheetFormatError, match="appears more than once"):
        read(HEADER + ",Image Src\n" + line(Handle="a") + ",\n")
