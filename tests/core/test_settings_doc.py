"""docs/settings.md is generated from Settings: it names every setting with its type, default
and description, and fails here the moment the class and the page disagree."""

from __future__ import annotations

from pathlib import Path

from imgbatch.core.settings import Settings
from imgbatch.core.settings_doc import render

PAGE = Path(__file__).parents[2] / "docs" / "settings.md"


def test_every_setting_says_what_it_does() -> None:
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undescribed, f"add Field(description=...) to: {undescribed}"


def test_docs_settings_page_matches_the_settings_class() -> None:
    assert PAGE.read_text() == render(), "docs/settings.md is stale: run `make docs`"


def test_the_page_lists_each_variable_once_with_its_default() -> None:
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| `IMGBATCH_")]
    variables = [row.split("`")[1] for row in rows]
    assert variables == [f"IMGBATCH_{name.upper()}" for name in Settings.model_fields]
    jpeg = next(row for row in rows if row.startswith("| `IMGBATCH_JPEG_QUALITY`"))
    assert "| integer, >= 1 and <= 95 | `50` | Output JPEG quality" in jpeg
    concurrency = next(row for row in rows if "IMGBATCH_WORKER_CONCURRENCY" in row)
    assert "| 2 x CPU count |" in concurrency  # not the count of the machine that generated it
