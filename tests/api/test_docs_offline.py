"""/docs and /redoc render in a real browser (Debian's chromium) with nothing but this server:
every request that leaves for another origin is refused, and the Content-Security-Policy the
pages carry must not block what they need."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Route

from tests.support.browser import chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        # Swagger UI has drawn an operation of ours from /openapi.json.
        ("/docs", ".opblock-summary-path[data-path='/api/upload']"),
        # Redoc has drawn the operation list (its side menu) from /openapi.json.
        ("/redoc", "li[data-item-id^='tag/']"),
    ],
)
def test_the_docs_render_offline_under_their_csp(
    browser: Browser, api: httpx.Client, path: str, rendered: str
) -> None:
    origin = str(api.base_url).rstrip("/")
    elsewhere: list[str] = []
    violations: list[str] = []
    context = browser.new_context()
    try:
        page = context.new_page()

        def offline(route: Route) -> None:
            if route.request.url.startswith(origin):
                route.continue_()
            else:  # as without a network: nothing outside this server answers
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", offline)
        page.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        page.goto(f"{origin}{path}")
        page.wait_for_selector(rendered, timeout=30_000)
    finally:
        context.close()
    assert elsewhere == []
    # Nothing the page needs is blocked. Redoc's bundle asks for its vendor's logo from their
    # CDN: the policy refusing that image is the policy at work, not a broken page.
    assert [v for v in violations if '"img-src' not in v] == []
