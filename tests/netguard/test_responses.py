"""Retry-After as a remote server sends it: only ASCII delta-seconds or an HTTP date counts,
clamped; anything else is no hint at all, and nothing raises."""

from __future__ import annotations

import email.utils
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgbatch.netguard import retry_after_seconds
from imgbatch.netguard.responses import MAX_RETRY_AFTER


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "¹²",
        "\u0663",
        "1.5",
        "-1",
        "+3",
        "1_000",
        "0x10",
        "inf",
        "nan",
        "",
        " ",
        "soon",
        "Mon, 01 Jan 10000 00:00:00 GMT",
        "Tue, 31 Feb 2026 00:00:00 GMT",
    ],
)
def test_anything_but_ascii_digits_or_an_http_date_is_ignored(value: str) -> None:
    assert retry_after_seconds(value) is None


def test_delta_seconds_and_dates_are_clamped() -> None:
    assert retry_after_seconds(" 120 ") == 120.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("9" * 10) == MAX_RETRY_AFTER
    far = email.utils.formatdate(time.time() + 10 * MAX_RETRY_AFTER, usegmt=True)
    assert retry_after_seconds(far) == MAX_RETRY_AFTER
    assert retry_after_seconds("Mon, 01 Jan 1990 00:00:00 GMT") == 0.0


@given(st.text())
def test_no_header_value_raises(value: str) -> None:
    seconds = retry_after_seconds(value)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER
