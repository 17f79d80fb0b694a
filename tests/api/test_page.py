"""The web page at / in a real browser (Debian's chromium, driven by Playwright) against the
real stack with keys on: enter a key, upload through the file input, watch the bar reach 100 %,
see the thumbnails load, download the CSVs, see a bad sheet's error table; screenshots at
1280 and 375 px go to .data/screenshots/."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import KeyedApi
from tests.support.browser import chromium
from tests.support.client import sheet
from tests.support.origin import Origin

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".data" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, keyed_api: KeyedApi) -> Iterator[Page]:
    context = browser.new_context(
        base_url=keyed_api.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(30_000)
    opened = context.new_page()
    errors: list[str] = []
    urls: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("request", lambda request: urls.append(request.url))
    yield opened
    context.close()
    assert not errors, errors
    # The key travels in a header only: never in an address the browser asked for.
    assert not [url for url in urls if keyed_api.key in url]


def test_upload_watch_gallery_download_and_errors(
    page: Page, keyed_api: KeyedApi, origin: Origin, tmp_path: Path
) -> None:
    good, other, bad = (
        origin.url("/img/rocket.jpg"),
        origin.url("/img/coffee.jpg"),
        origin.url("/status/404"),
    )
    source = tmp_path / "supplier-42.csv"
    source.write_text(
        sheet(
            [(1, "Rocket", good), (2, "Coffee", f"{other},{bad}"), (3, "Both", f"{good},{other}")]
        )
    )

    page.goto("/")
    page.get_by_label("API key", exact=True).fill(keyed_api.key)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('imgbatch.key')") == keyed_api.key
    assert keyed_api.key not in page.content()

    page.set_input_files("#file", source)
    expect(page.locator("#file-name")).to_contain_text("supplier-42.csv")
    page.get_by_role("button", name="Upload").click()

    expect(page.locator("#percent")).to_have_text("100 %", timeout=90_000)
    expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#status-badge")).to_have_text("completed")
    expect(page.locator("#counts")).to_contain_text("4 done · 1 failed · 5 images")
    images = page.locator("#gallery img")
    expect(images).to_have_count(4, timeout=20_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    expect(page.locator(".failed-badge")).to_have_text("http_error")
    expect(page.locator("#history button").first).to_contain_text("supplier-42.csv")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download result CSV").click()
    result = Path(download.value.path()).read_text()
    rows = list(csv.reader(result.splitlines()))
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls", "Errors"]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    assert download.value.suggested_filename.endswith(".csv")
    with page.expect_download() as failed:
        page.get_by_role("button", name="Download failed rows").click()
    failed_rows = list(csv.reader(Path(failed.value.path()).read_text().splitlines()))
    assert failed_rows == [list(rows[0][:3]), ["2", "Coffee", f"{other},{bad}"]]

    # Retry: the server answers 202, the bar comes back to 100 % (the 404 fails again).
    with page.expect_response(lambda r: r.url.endswith("/retry")) as retried:
        page.get_by_role("button", name="Retry failed images").click()
    assert retried.value.status == 202
    expect(page.locator("#status-badge")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#percent")).to_have_text("100 %")
    expect(page.locator(".failed-badge")).to_have_text("http_error", timeout=20_000)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "page-1280.png", full_page=True)
    page.set_viewport_size({"width": 375, "height": 800})
    page.screenshot(path=SCREENSHOTS / "page-375.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    invalid = tmp_path / "invalid.csv"
    invalid.write_text(sheet([(1, "", good), ("x", "Bad", "ftp://nope")]))
    page.set_input_files("#file", invalid)
    page.get_by_role("button", name="Upload").click()
    table = page.locator("#row-errors")
    expect(table).to_be_visible()
    expect(table.locator("thead th")).to_have_text(["Line", "Column", "Reason"])
    first = table.locator("tbody tr").first.locator("td")
    expect(first.nth(0)).to_have_text("2")
    assert table.locator("tbody tr").count() >= 2
    page.screenshot(path=SCREENSHOTS / "page-375-errors.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
