"""Reading what a remote server answered, shared by image downloads and webhook deliveries."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

# The most a server's Retry-After is taken at: callers clamp further to their own schedules.
MAX_RETRY_AFTER = 86400.0
# RFC 9110: delta-seconds is 1*DIGIT, and DIGIT is ASCII. str.isdigit() also says yes to "²",
# which float() then refuses: a remote server could crash the caller with one header.
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}", re.ASCII)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` (delta-seconds or HTTP-date) as seconds from now, within
    ``[0, MAX_RETRY_AFTER]``; None for anything else, which callers then ignore.

    Shared by image downloads and webhook deliveries, which both honour it.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        delta = (when - datetime.now(UTC)).total_seconds()
    except OverflowError:
        return None
    return min(max(0.0, delta), MAX_RETRY_AFTER)
