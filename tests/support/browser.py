"""Headless Chromium from Debian's package (``make browser`` installs it), driven by Playwright.

Playwright's own browser download is never used: it cannot reach its download host here, and a
browser from apt is what a fresh machine can get. The Playwright version is pinned in
pyproject.toml, so moving to a newer protocol is a deliberate change.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"  # Debian's package; `make test` installs it when missing
CHROMIUM_ARGS = [
    "--no-sandbox",  # running as root: chromium refuses to start sandboxed
    "--disable-gpu",
    "--disable-background-networking",  # no internet here: no background requests
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
