"""The client commands (`imgbatch submit/status/watch/download`) in a pseudo-terminal, against
the real stack with keys switched on: what the screen shows, the files written, exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from imgbatch.core.settings import child_environment
from tests.conftest import KeyedApi
from tests.support.client import sheet, upload, wait_for_status
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


def _script(*args: str, keyed_api: KeyedApi) -> tuple[int, str]:
    """``imgbatch ARGS`` as a script runs it: output to a pipe, not a terminal."""
    done = subprocess.run(
        [sys.executable, "-m", "imgbatch", *args, "--server", keyed_api.url],
        env=child_environment(_env(keyed_api)),
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stdout.decode()


def _json(*args: str, keyed_api: KeyedApi) -> tuple[int, Any]:
    code, out = _script(*args, "--json", keyed_api=keyed_api)
    return code, json.loads(out)


def test_list_results_retry_and_cancel_match_the_api(
    keyed_api: KeyedApi, origin: Origin, tmp_path: Path
) -> None:
    flaky = origin.url(f"/flaky/{uuid.uuid4().hex}/2/chelsea.jpg")  # fails twice, then serves
    good = origin.url("/img/rocket.jpg")
    with keyed_api.client() as api:
        accepted = upload(
            api, sheet([(1, "Fine", good), (2, "Flaky", flaky)]), filename="cli-list.csv"
        )
        request_id = accepted.json()["request_id"]
        wait_for_status(api, request_id)

    listing = Terminal("list", "--server", keyed_api.url, env=_env(keyed_api))
    assert listing.finish() == 0
    row = next(line for line in listing.text.splitlines() if request_id in line)
    assert "completed" in row and "1 done, 1 failed, 2 in all" in row and "cli-list.csv" in row
    code, body = _json("list", "--limit", "5", keyed_api=keyed_api)
    assert code == 0
    mine = next(item for item in body["requests"] if item["request_id"] == request_id)
    assert (mine["images_done"], mine["images_failed"]) == (1, 1)

    out = tmp_path / "records.jsonl"
    results = Terminal(
        "results", request_id, "--out", str(out), "--server", keyed_api.url, env=_env(keyed_api)
    )
    assert results.finish() == 0
    assert f"wrote {out} (2 image records" in results.text
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["serial_number"], r["status"]) for r in records] == [(1, "done"), (2, "failed")]
    # Without --out the records are the output: JSON Lines, nothing else, for a pipe.
    code, stdout = _script("results", request_id, keyed_api=keyed_api)
    assert code == 0
    assert stdout == out.read_text()

    retry = Terminal("retry", request_id, "--server", keyed_api.url, env=_env(keyed_api))
    assert retry.finish() == 0
    assert f"request {request_id}: 1 products queued again" in retry.text
    with keyed_api.client() as api:
        final = wait_for_status(api, request_id)
    assert (final["images_done"], final["images_failed"]) == (2, 0)
    code, status = _json("status", request_id, keyed_api=keyed_api)
    assert code == 0
    assert (status["status"], status["images_done"], status["images_failed"]) == ("completed", 2, 0)
    # Nothing left to retry: the server's 409, as JSON for a script.
    code, refused = _json("retry", request_id, keyed_api=keyed_api)
    assert code == 1 and refused["error"]["status_code"] == 409

    gate = uuid.uuid4().hex
    with keyed_api.client() as api:
        held = upload(api, sheet([(1, "Held", origin.url(f"/gate/{gate}/coffee.jpg"))]))
        held_id = held.json()["request_id"]
    try:
        code, cancelled = _json("cancel", held_id, keyed_api=keyed_api)
        assert code == 0
        assert cancelled == {"request_id": held_id, "status": "cancelled", "products_requeued": 0}
        with keyed_api.client() as api:
            assert api.get(f"/api/status/{held_id}").json()["status"] == "cancelled"
    finally:
        origin.open_gate(gate)
    again = Terminal("cancel", held_id, "--server", keyed_api.url, env=_env(keyed_api))
    assert again.finish() == 1
    assert "409" in again.text


def test_sheet_and_server_text_is_shown_as_text_never_as_markup_or_escapes(
    keyed_api: KeyedApi, tmp_path: Path
) -> None:
    link = "[link=https://evil.example/]y[/link]"
    source = tmp_path / "markup.csv"
    source.write_text(
        sheet([("[/x]", "A", "https://a.example/x.jpg"), (link, "B", "https://a.example/y.jpg")])
    )
    term = Terminal("submit", str(source), "--server", keyed_api.url, env=_env(keyed_api))
    # Before: rich read the reason "got '[/x]'" as a closing tag, raised MarkupError, and the
    # command died with a traceback; the link became a hyperlink showing only "y".
    assert term.finish() == 2
    assert "'[/x]'" in term.text
    assert link in term.text
    assert "Traceback" not in term.text

    hostile = "evil\x1b[31mred\x1b]0;pwned\x07.csv"
    # Written by hand: httpx would percent-encode the BEL, a hostile client does not.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
        + hostile.encode()
        + b'"\r\nContent-Type: text/csv\r\n\r\n'
        + sheet([(1, "A", "https://a.example/x.jpg")]).encode()
        + b"\r\n--b--\r\n"
    )
    with keyed_api.client() as api:
        accepted = api.post(
            "/api/upload",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        stored = api.get(f"/api/status/{request_id}").json()["file_name"]
    # A server that strips control characters from stored names (issue 22) sends none; one
    # that does not, or an older one, sends them all: the client must be safe with both.
    assert stored in (hostile, "evil[31mred]0;pwned.csv")
    status = Terminal("status", request_id, "--server", keyed_api.url, env=_env(keyed_api))
    assert status.finish() == 0
    # The escapes are shown, not obeyed: no colour, and the window title is untouched.
    shown = stored.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert shown in status.text
    assert status.screen.title != "pwned"
    assert all(
        char.fg == "default" for line in status.screen.buffer.values() for char in line.values()
    )


def test_delete_removes_the_request_and_a_second_delete_is_404(
    keyed_api: KeyedApi, origin: Origin
) -> None:
    with keyed_api.client() as api:
        accepted = upload(api, sheet([(1, "Doomed", origin.url("/img/rocket.jpg"))]))
        request_id = accepted.json()["request_id"]
        wait_for_status(api, request_id)

        term = Terminal("delete", request_id, "--server", keyed_api.url, env=_env(keyed_api))
        assert term.finish() == 0
        assert f"deleted request {request_id}" in term.text
        assert api.get(f"/api/status/{request_id}").status_code == 404

    again = Terminal("delete", request_id, "--server", keyed_api.url, env=_env(keyed_api))
    assert again.finish() == 1
    assert "404" in again.text
    code, body = _json("delete", request_id, keyed_api=keyed_api)
    assert code == 1 and body["error"]["status_code"] == 404


def test_submit_watch_and_download_speak_json_for_scripts(
    keyed_api: KeyedApi, origin: Origin, tmp_path: Path
) -> None:
    source = tmp_path / "scripted.csv"
    source.write_text(sheet([(1, "Fine", origin.url("/img/rocket.jpg"))]))
    out = tmp_path / "scripted-result.csv"
    code, submitted = _json("submit", str(source), "--wait", "--out", str(out), keyed_api=keyed_api)
    assert code == 0
    request_id = submitted["request_id"]
    assert submitted["status"] == "completed"
    assert (submitted["images_done"], submitted["images_failed"]) == (1, 0)
    assert submitted["result_csv"] == str(out)
    assert list(csv.reader(out.open()))[1][0] == "1"

    code, stdout = _script("watch", request_id, "--json", keyed_api=keyed_api)
    assert code == 0
    updates = [json.loads(line) for line in stdout.splitlines()]
    assert updates[-1] == {
        "request_id": request_id,
        "status": "completed",
        "images_done": 1,
        "images_failed": 0,
        "images_total": 1,
    }
    again = tmp_path / "again.csv"
    code, saved = _json("download", request_id, "--out", str(again), keyed_api=keyed_api)
    assert code == 0
    assert saved == {"request_id": request_id, "path": str(again), "bytes": again.stat().st_size}
