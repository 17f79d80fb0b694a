"""Logging: one line per event, named ``domain.event`` with ``key=value`` fields.

URLs are logged without their query string and userinfo, where tokens and passwords live.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # httpx logs every request at INFO; our own events already say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    details = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(level, "%s %s", event, details)
