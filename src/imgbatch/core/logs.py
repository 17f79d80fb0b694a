"""Logging: one event per line, named ``domain.event``, with its fields as structured data.

structlog renders every record, ours and those of the libraries (uvicorn, Celery, httpx), either
as one JSON object per line (``IMGBATCH_LOG_FORMAT=json``, for log shippers) or as aligned
console lines (``console``, the default for ``make run``). Fields bound with :func:`bind_context`
(``request_id`` in a task or an API handler, ``http_request_id`` per HTTP request) are added to
every line logged in that context, so one grep on a request id finds its whole story.

URLs are logged without their query string and userinfo, where tokens and passwords live:
:func:`redact_url` is the one function that strips them, for our own events, error messages and
httpx's request log alike. Tracebacks are rendered as plain text, never with frame locals (an
``Authorization`` header sits in a local of every request handler).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# LogRecord attributes: a field with one of these names would make logging raise.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _add_pid(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.setdefault("pid", os.getpid())
    return event


def _drop_color_message(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)  # uvicorn puts an ANSI copy of its message in `extra`
    return event


def _shared_processors(extra: Sequence[Processor]) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),  # log_event's fields, and Celery's `data`
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
        _drop_color_message,
        *extra,
    ]


def make_formatter(fmt: str = "console", extra: Sequence[Processor] = ()) -> logging.Formatter:
    """The formatter for every handler: structlog's, over records from any stdlib logger."""
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # plain_traceback: the default (rich, when installed) would print frame locals.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(extra),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
    )


def configure_logging(
    level: str = "INFO", fmt: str = "console", *, extra: Sequence[Processor] = ()
) -> None:
    """Route every logger of this process through one structlog-formatted handler on stdout.

    ``extra`` processors run on every record (the worker adds one that names the request of a
    Celery "received" line). Safe to call again: it replaces what it set before.
    """
    # sys.__stdout__: Celery redirects sys.stdout to a logger, and a handler writing to that
    # proxy would feed itself.
    handler = logging.StreamHandler(sys.__stdout__)
    handler.setFormatter(make_formatter(fmt, extra))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "celery", "celery.task"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # uvicorn checks for handlers per connection: propagating would undo --no-access-log (the
    # API logs its own `http.request` line, with the route template and the request's id).
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    # billiard's "Process ... exited with signal 9" goes to a logger that does not propagate.
    pool = logging.getLogger("multiprocessing")
    pool.handlers[:] = [handler]
    pool.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    # httpx logs every request at INFO; our own events already say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def bind_context(**fields: Any) -> None:
    """Add ``fields`` to every line logged from here on in this context (task, HTTP request)."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_context() -> None:
    """Forget the bound fields: a pool process runs one task after another in one context."""
    structlog.contextvars.clear_contextvars()


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
    """Log ``event`` with ``fields`` as structured data (never formatted into the message)."""
    extra = {f"{key}_" if key in _RESERVED else key: value for key, value in fields.items()}
    logger.log(level, event, extra=extra, stacklevel=2)
