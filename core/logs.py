"""Logging: one line per event, named ``domain.event`` with ``key=value`` fields.

URLs are logged without their query string and userinfo, where tokens and passwords live:
:func:`redact_url` is the one function that strips them, for our own events, error messages and
httpx's request log alike.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

import httpx


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # httpx logs every request at INFO; our own events already say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without userinfo, query or fragment, for messages and logs."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"


_URL_TAIL = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")


def scrub_message(text: str) -> str:
    """Remove query strings and fragments from any URL embedded in free text."""
    return _URL_TAIL.sub(r"\1", text)


class _RedactURLs(logging.Filter):
    """httpx logs every request at INFO with its full URL, query string (tokens) included.

    A filter on the ``httpx`` logger rewrites those arguments to the redacted form, so turning on
    INFO logging for debugging cannot leak signed-URL tokens into log storage.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _RedactURLs) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_RedactURLs())


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    details = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(level, "%s %s", event, details)
