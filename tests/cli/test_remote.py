"""The client commands (`imgbatch submit/status/watch/download`) in a pseudo-terminal, against
the real stack with keys switched on: what the screen shows, the files written, exit codes."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

from tests.conftest import KeyedApi
from tests.support.client import sheet
from tests.support.origin import Origin
from tests.support.terminal import Terminal


def _env(keyed_api: KeyedApi) -> dict[str, str]:
    # The key comes from the environment, the server from --server: both ways are exercised.
    return {"IMGBATCH_API_KEY": keyed_api.key, "IMGBATCH_SERVER_URL": ""}


def test_submit_wait_shows_a_moving_bar_then_saves_the_result(
    keyed_api: KeyedApi, origin: Origin, tmp_path: Path
) -> None:
    gate = uuid.uuid4().hex
    good, held, bad = (
        origin.url("/img/rocket.jpg"),
        origin.url(f"/gate/{gate}/coffee.jpg"),
        origin.url("/status/404"),
    )
    source = tmp_path / "sheet.csv"
    source.write_text(sheet([(1, "Fine", good), (2, "Held", held), (3, "Broken", bad)]))
    out = tmp_path / "result.csv"
    term = Terminal(
        "submit",
        str(source),
        "--wait",
        "--out",
        str(out),
        "--server",
        keyed_api.url,
        env=_env(keyed_api),
    )
    try:
        moving = term.wait_for("in_progress", "1 done · 1 failed · 3 images")
        assert "67%" in moving
    finally:
        origin.open_gate(gate)
    assert term.finish() == 1  # an image failed, and --allow-failures was not given
    screen = term.text
    request_id = screen.split("request ", 1)[1].split(":", 1)[0]
    assert "3 products, 3 images" in screen
    assert "completed" in screen and "100%" in screen
    assert "2 done · 1 failed · 3 images" in screen
    assert "images/s" in screen and "ETA" in screen
    assert f"result CSV: {out}" in screen
    rows = list(csv.reader(out.open()))
    assert rows[0][-3:] == ["Output Image Urls", "Errors", "Warnings"]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    assert "http_error" in rows[3][-2]

    watch = Terminal(
        "watch", request_id, "--allow-failures", "--server", keyed_api.url, env=_env(keyed_api)
    )
    assert watch.finish() == 0
    assert "2 done · 1 failed · 3 images" in watch.text

    status = Terminal("status", request_id, "--server", keyed_api.url, env=_env(keyed_api))
    assert status.finish() == 0
    assert "2 done, 1 failed, 3 in all" in status.text
    assert "sheet.csv" in status.text

    failed = tmp_path / "failed.csv"
    download = Terminal(
        "download",
        request_id,
        "--only-failed",
        "--out",
        str(failed),
        "--server",
        keyed_api.url,
        env=_env(keyed_api),
    )
    assert download.finish() == 0
    assert f"wrote {failed}" in download.text
    assert list(csv.reader(failed.open())) == [
        ["S. No.", "Product Name", "Input Image Urls"],
        ["3", "Broken", bad],
    ]


def test_submit_of_an_invalid_sheet_shows_the_row_errors_and_exits_2(
    keyed_api: KeyedApi, tmp_path: Path
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(sheet([(1, "", "https://a.example/x.jpg"), ("two", "B", "not-a-url")]))
    term = Terminal("submit", str(source), "--wait", "--server", keyed_api.url, env=_env(keyed_api))
    assert term.finish() == 2
    screen = term.text
    header = next(line for line in screen.splitlines() if "reason" in line)
    assert "line" in header and "column" in header
    assert any(line.strip().startswith("│ 2") or "  2 " in line for line in screen.splitlines())
    assert "nothing was stored" in screen


def test_a_missing_key_is_reported_not_crashed_on(keyed_api: KeyedApi, tmp_path: Path) -> None:
    term = Terminal("status", "whatever", "--server", keyed_api.url, env={"IMGBATCH_API_KEY": ""})
    assert term.finish() == 1
    assert "401" in term.text and "API key is required" in term.text
