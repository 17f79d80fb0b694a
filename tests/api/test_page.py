"""The web page at / in a real browser (Debian's chromium, driven by Playwright) against the
real stack with keys on: enter a key, upload through the file input, watch the bar reach 100 %,
see the thumbnails load, download the CSVs, see a bad sheet's error table; screenshots at
1280 and 375 px go to .data/screenshots/."""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from imgbatch.cli.stack import Stack
from imgbatch.core.settings import Settings
from tests.conftest import KeyedApi
from tests.support.browser import chromium
from tests.support.client import sheet, upload, wait_for_status
from tests.support.keys import new_key
from tests.support.origin import Origin
from tests.support.relay import Relay
from tests.support.stacks import side_api
from tests.support.waiting import wait_until

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".data" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@contextmanager
def _browsing(browser: Browser, base_url: str, key: str | None = None) -> Iterator[Page]:
    """A fresh tab on ``base_url``; no script error may happen in it, and ``key`` never
    appears in an address the browser asked for (it travels in a header only)."""
    context = browser.new_context(
        base_url=base_url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(30_000)
    opened = context.new_page()
    errors: list[str] = []
    urls: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("request", lambda request: urls.append(request.url))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, errors
    assert not [url for url in urls if key and key in url]


@pytest.fixture
def page(browser: Browser, keyed_api: KeyedApi) -> Iterator[Page]:
    with _browsing(browser, keyed_api.url, keyed_api.key) as opened:
        yield opened


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
    # The profiles come from GET /api/profiles; storefront adds the thumbnails the gallery shows.
    page.get_by_label("Output profile").select_option("storefront")
    page.get_by_role("button", name="Upload").click()

    expect(page.locator("#percent")).to_have_text("100 %", timeout=90_000)
    expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#status-badge")).to_have_text("completed")
    expect(page.locator("#counts")).to_contain_text("4 done · 1 failed · 5 images")
    images = page.locator("#gallery img")
    expect(images).to_have_count(4, timeout=20_000)
    for index in range(4):
        expect(images.nth(index)).to_have_attribute("src", re.compile(r"/thumbnail\.webp$"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img')]"
        ".every((img) => img.complete && img.naturalWidth > 0 && img.naturalWidth <= 150)"
    )
    expect(page.locator(".failed-badge")).to_have_text("http_error")
    expect(page.locator("#history button").first).to_contain_text("supplier-42.csv")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download result CSV").click()
    result = Path(download.value.path()).read_text()
    rows = list(csv.reader(result.splitlines()))
    assert rows[0] == [
        "S. No.",
        "Product Name",
        "Input Image Urls",
        "Output Image Urls",
        "Thumbnail Image Urls",
        "Medium Image Urls",
        "Large Image Urls",
        "Errors",
        "Warnings",
    ]
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


# Every value the bar's aria-valuenow takes, in order, recorded by the page itself: a value
# shown for a moment between two of the test's looks is recorded all the same.
RECORD_BAR = """
document.addEventListener("DOMContentLoaded", () => {
  window.barValues = [];
  const bar = document.getElementById("bar");
  new MutationObserver(() => window.barValues.push(Number(bar.getAttribute("aria-valuenow"))))
    .observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
});
"""


def test_progress_arrives_live_and_a_dropped_stream_resumes_from_its_last_event(
    browser: Browser, keyed_api: KeyedApi, origin: Origin, tmp_path: Path
) -> None:
    # Three images held by the origin until the test lets each go: the bar can only move when
    # one is let go, so each step is seen, and the batch is running for as long as needed.
    gates = [uuid.uuid4().hex for _ in range(3)]
    source = tmp_path / "live.csv"
    source.write_text(
        sheet(
            [
                (n + 1, f"Held {n + 1}", origin.url(f"/gate/{g}/coffee.jpg"))
                for n, g in enumerate(gates)
            ]
        )
    )
    port = int(keyed_api.url.rsplit(":", 1)[1])
    navigations: list[str] = []
    with Relay(port) as relay, _browsing(browser, relay.url, keyed_api.key) as page:
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.add_init_script(RECORD_BAR)
        try:
            page.goto("/")
            page.get_by_label("API key", exact=True).fill(keyed_api.key)
            page.keyboard.press("Enter")
            page.set_input_files("#file", source)
            page.get_by_role("button", name="Upload").click()
            expect(page.locator("#request-section")).to_be_visible()

            # The first image done, seen on the page (the bar moves only on a stream event): the
            # page has read an event id. Then cut the stream mid-batch.
            origin.open_gate(gates[0])
            expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "33", timeout=60_000)
            cut: list[int] = []

            def cut_one() -> bool:
                count, _ = relay.cut_event_streams()
                if count:
                    cut.append(len(relay.event_requests()))
                return bool(count)

            wait_until(cut_one, what="an open event stream to cut")
            seen = cut[0]
            wait_until(lambda: len(relay.event_requests()) > seen, what="the page to reconnect")
            # The very next request resumes from an id the server sent: same request, no reload.
            resumed = relay.event_requests()[seen].headers.get("last-event-id")
            assert resumed is not None and resumed in relay.event_ids, (resumed, relay.event_ids)

            for gate, percent in zip(gates[1:], ("66", "100"), strict=True):
                origin.open_gate(gate)
                expect(page.locator("#bar")).to_have_attribute(
                    "aria-valuenow", percent, timeout=60_000
                )
            expect(page.locator("#status-badge")).to_have_text("completed")
            values = page.evaluate("window.barValues")
        finally:
            for gate in gates:
                origin.open_gate(gate)
    # Progress arrived while the batch ran, step by step: 33 and 66 (rounded down) before 100.
    assert [v for v in values if 0 < v < 100] == [33, 66], values
    assert values[-1] == 100
    # From the event stream alone: the page never fell back to polling the status, and it was
    # never reloaded (one navigation: the test's own).
    polls = [
        h.path
        for h in relay.heads
        if h.path.startswith("/api/status/")
        and "limit=1&" not in h.path
        and h.path.endswith("limit=1")
    ]
    assert not polls, polls
    assert len(navigations) == 1, navigations


def _sign_in_and_open(page: Page, key: str, request_id: str) -> None:
    page.goto("/")
    page.get_by_label("API key", exact=True).fill(key)
    page.keyboard.press("Enter")
    page.locator(f"#history button[data-id='{request_id}']").click()
    expect(page.locator("#request-id")).to_have_text(request_id)


def test_a_click_on_an_image_shows_its_record(
    page: Page, keyed_api: KeyedApi, origin: Origin
) -> None:
    photo, bad = origin.url("/img/chelsea_exif_rotated.jpg"), origin.url("/status/404")
    with keyed_api.client() as api:
        accepted = upload(
            api,
            sheet([(1, "Cat", photo), (2, "Gone", bad)]),
            filename="records.csv",
            data={"profile": "storefront"},
        )
        request_id = accepted.json()["request_id"]
        final = wait_for_status(api, request_id)
    record = final["products"][0]["images"][0]
    _sign_in_and_open(page, keyed_api.key, request_id)
    expect(page.locator("#status-badge")).to_have_text("completed")

    page.get_by_role("button", name="Image 1 of Cat: details").click()
    dialog = page.locator("#record")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("#1 Cat · image 1")
    expect(dialog.get_by_role("link", name=photo)).to_have_attribute("href", photo)
    source = record["source"]
    expect(dialog).to_contain_text(f"JPEG · {source['width']} \u00d7 {source['height']} px")
    expect(dialog).to_contain_text(source["sha256"])
    expect(dialog.locator(".colour")).to_have_text(record["dominant_color"])
    rows = dialog.locator("table.variants tbody tr")
    expect(rows).to_have_count(len(record["variants"]))
    for name, variant in record["variants"].items():
        row = rows.filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row).to_contain_text(f"{variant['width']} \u00d7 {variant['height']} px")
        expect(row.get_by_role("link")).to_have_attribute("href", variant["url"])
    expect(dialog).to_contain_text("ExampleCam")  # the camera's EXIF make
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "record-1280.png")
    page.set_viewport_size({"width": 375, "height": 800})
    page.screenshot(path=SCREENSHOTS / "record-375.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    page.get_by_role("button", name="Image 1 of Gone: details").click()
    expect(dialog.locator(".record-error")).to_have_text(
        f"{final['products'][1]['images'][0]['error']['code']}: "
        f"{final['products'][1]['images'][0]['error']['message']}"
    )
    expect(dialog.locator("table.variants")).to_have_count(0)
    page.screenshot(path=SCREENSHOTS / "record-failed-375.png")


def test_with_auth_disabled_the_page_asks_for_no_key(browser: Browser, stack: Stack) -> None:
    with _browsing(browser, stack.api_url) as page:
        page.goto("/")
        expect(page.locator("#upload-title")).to_be_visible()
        expect(page.get_by_label("API key", exact=True)).to_be_hidden()
        expect(page.locator("#forget-key")).to_be_hidden()


def test_delete_asks_first_then_removes_the_request(
    page: Page, keyed_api: KeyedApi, origin: Origin
) -> None:
    with keyed_api.client() as api:
        accepted = upload(api, sheet([(1, "Doomed", origin.url("/img/rocket.jpg"))]))
        request_id = accepted.json()["request_id"]
        wait_for_status(api, request_id)
        _sign_in_and_open(page, keyed_api.key, request_id)

        page.get_by_role("button", name="Delete request").click()
        confirm = page.locator("#confirm-delete")
        expect(confirm).to_be_visible()
        expect(confirm.locator("#confirm-id")).to_have_text(request_id)
        confirm.get_by_role("button", name="Keep it").click()
        expect(confirm).to_be_hidden()
        assert api.get(f"/api/status/{request_id}").status_code == 200

        page.get_by_role("button", name="Delete request").click()
        with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            confirm.get_by_role("button", name="Delete", exact=True).click()
        assert deleted.value.status == 204
        expect(page.locator("#notice")).to_have_text(f"Request {request_id} was deleted.")
        expect(page.locator("#request-section")).to_be_hidden()
        expect(page.locator(f"#history button[data-id='{request_id}']")).to_have_count(0)
        assert api.get(f"/api/status/{request_id}").status_code == 404


@pytest.fixture(scope="module")
def default_streams_api(stack: Stack) -> Iterator[KeyedApi]:
    """An API with keys on and the default stream settings: keyed_api's streams end after 5 s,
    and streams held to fill a key's cap must stay open for as long as the test needs."""
    with side_api(stack, "api-page-streams", {"IMGBATCH_AUTH_DISABLED": "false"}) as url:
        yield KeyedApi(url, new_key(stack, "page-streams")[1])


def test_a_page_told_to_wait_for_a_stream_waits_and_then_follows_the_batch(
    browser: Browser, default_streams_api: KeyedApi, origin: Origin
) -> None:
    """The key already holds as many event streams as it may (the default cap): the page's
    stream gets a 429 with Retry-After. It waits as told and tries again, rather than showing
    an error and never moving again."""
    keyed_api = default_streams_api
    with _browsing(browser, keyed_api.url, keyed_api.key) as page:
        _told_to_wait(page, keyed_api, origin)


def _told_to_wait(page: Page, keyed_api: KeyedApi, origin: Origin) -> None:
    gate = uuid.uuid4().hex
    with keyed_api.client() as api:
        accepted = upload(
            api, sheet([(1, "Held", origin.url(f"/gate/{gate}/coffee.jpg"))]), filename="busy.csv"
        )
        request_id = accepted.json()["request_id"]
    cap = Settings.model_fields["events_streams_per_owner"].default
    events: list[int] = []
    page.on(
        "response",
        lambda r: events.append(r.status) if r.url.endswith(f"{request_id}/events") else None,
    )
    held = ExitStack()
    try:
        client = held.enter_context(keyed_api.client())
        for _ in range(cap):
            stream = held.enter_context(client.stream("GET", f"/api/requests/{request_id}/events"))
            assert stream.status_code == 200
        # Waited on through Playwright: its events are only dispatched inside its own calls.
        with page.expect_response(
            lambda r: r.url.endswith(f"{request_id}/events") and r.status == 429, timeout=60_000
        ):
            _sign_in_and_open(page, keyed_api.key, request_id)
    finally:
        held.close()
        origin.open_gate(gate)
    expect(page.locator("#status-badge")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#action-error")).to_have_text("")
    # It came back for the stream once the others were gone.
    assert events[0] == 429 and 200 in events[1:], events


def test_catalogue_warnings_show_as_a_badge_and_in_the_record(
    page: Page, keyed_api: KeyedApi, origin: Origin
) -> None:
    small, large = origin.url("/img/coffee.jpg"), origin.url("/img/coffee_4mp.jpg")
    with keyed_api.client() as api:
        accepted = upload(api, sheet([(1, "Small", small), (2, "Large", large)]), filename="w.csv")
        request_id = accepted.json()["request_id"]
        final = wait_for_status(api, request_id)
    small_warnings = final["products"][0]["images"][0]["warnings"]
    large_warnings = final["products"][1]["images"][0]["warnings"]
    # coffee.jpg is 600 px wide, under the default profile's 800 px.
    assert "too_small" in [w["code"] for w in small_warnings]
    _sign_in_and_open(page, keyed_api.key, request_id)
    expect(page.locator("#status-badge")).to_have_text("completed")
    cards = page.locator(".warn-badge")
    expect(cards).to_have_count(1 + (1 if large_warnings else 0))
    badge = cards.first
    expect(badge).to_have_text(f"\u26a0 {len(small_warnings)}")
    for warning in small_warnings:
        expect(badge).to_have_attribute("title", re.compile(re.escape(warning["message"])))
    page.get_by_role("button", name="Image 1 of Small: details").click()
    listed = page.locator("#record ul.warnings li")
    expect(listed).to_have_count(len(small_warnings))
    expect(listed.first).to_contain_text(small_warnings[0]["message"])
