"""One data row: its serial number, name and image URLs, each checked with its own message."""

from __future__ import annotations

import re
from array import array
from typing import Final
from urllib.parse import urlsplit

from imgbatch.sheets.types import SERIAL_COLUMN, URLS_COLUMN, SheetLimits, UrlCheck, show

_MAX_SERIAL: Final = 2**63 - 1  # stored as a MongoDB int64
_DIGITS: Final = re.compile(r"[0-9]+")
_SCHEME_START: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_SPLIT: Final = re.compile(r"([,;])")


class SerialIndex:
    """serial -> first line, compact for the usual dense 1..N numbering.

    A dict of 100k int->int pairs costs ~12 MB; a flat array indexed by serial costs 8 bytes a
    slot, so serials up to a few times the row cap go there and only outliers use the dict.
    """

    __slots__ = ("_dense", "_dense_cap", "_sparse")

    def __init__(self, max_rows: int) -> None:
        self._dense = array("Q")
        self._dense_cap = max(4096, 4 * max_rows)
        self._sparse: dict[int, int] = {}

    def first_line(self, serial: int) -> int | None:
        if serial < len(self._dense):
            return self._dense[serial] or None
        return self._sparse.get(serial)

    def add(self, serial: int, line: int) -> None:
        if serial < self._dense_cap:
            if serial >= len(self._dense):
                size = min(max(serial + 1, 2 * len(self._dense), 1024), self._dense_cap)
                self._dense.frombytes(bytes(self._dense.itemsize * (size - len(self._dense))))
            self._dense[serial] = line
        else:
            self._sparse[serial] = line


def split_urls(cell: str) -> list[str]:
    """Split an image-URL cell; see the module docstring for why commas are not always splits."""
    urls: list[str] = []
    for token in cell.split():
        parts = _URL_SPLIT.split(token)  # [piece, separator, piece, separator, ...]
        current: str | None = None
        for index in range(0, len(parts), 2):
            piece = parts[index]
            if not piece:
                if current is not None:
                    urls.append(current)
                current = None
            elif current is not None and not _SCHEME_START.match(piece):
                current += parts[index - 1] + piece
            else:
                if current is not None:
                    urls.append(current)
                current = piece
        if current is not None:
            urls.append(current)
    return urls


def parse_serial(value: str, problems: list[tuple[str, str]]) -> int | None:
    if not value:
        problems.append((SERIAL_COLUMN, "serial number is empty"))
        return None
    if not _DIGITS.fullmatch(value) or len(value) > 30:
        problems.append(
            (SERIAL_COLUMN, f"serial number must be a positive integer, got {show(value)}")
        )
        return None
    serial = int(value)
    if serial == 0:
        problems.append(
            (SERIAL_COLUMN, f"serial number must be a positive integer, got {show(value)}")
        )
        return None
    if serial > _MAX_SERIAL:
        problems.append((SERIAL_COLUMN, f"serial number is too large, got {show(value)}"))
        return None
    return serial


def check_urls(cell: str, limits: SheetLimits, problems: list[tuple[str, str]]) -> list[str]:
    if _PLAIN_CELL.fullmatch(cell) is not None:
        # The usual cell: plain http(s) URLs joined by commas. One regex over the cell proves
        # what split_urls and url_problem would find (each URL starts with a scheme, so every
        # comma splits; no whitespace, control characters or port above 65535), which was half
        # of the upload's parsing time; only the limits and the host check are left.
        urls = cell.split(",")
        if len(urls) <= limits.max_urls_per_row and max(map(len, urls)) <= limits.max_url_length:
            if limits.url_check is not None:
                _check_plain_hosts(urls, limits.url_check, problems)
            return urls
    return _check_each_url(cell, limits, problems)


def _check_plain_hosts(
    urls: list[str], url_check: UrlCheck, problems: list[tuple[str, str]]
) -> None:
    """A plain URL is judged by its host alone (``SheetLimits.url_check``), so each distinct
    authority of the cell is judged once: a row's URLs nearly always share one, and a call per
    URL was a third of a 100k-row sheet's parse with the default address policy.

    A plain URL's authority is what its second "/" is followed by, up to the third: the host,
    its port, and (for ``http://host?q``) a query or fragment, which ``http://{that}/`` still
    reads the same host from."""
    authorities = [url.split("/", 3)[2] for url in urls]
    reasons = {each: url_check(f"http://{each}/") for each in set(authorities)}
    if not any(reasons.values()):
        return
    for number, (url, authority) in enumerate(zip(urls, authorities, strict=True), start=1):
        reason = reasons[authority]
        if reason is not None:
            problems.append((URLS_COLUMN, f"URL {number} {_not_allowed(reason, url)}"))


def _check_each_url(cell: str, limits: SheetLimits, problems: list[tuple[str, str]]) -> list[str]:
    urls = split_urls(cell)
    if not urls:
        problems.append((URLS_COLUMN, "no image URL given"))
        return urls
    if len(urls) > limits.max_urls_per_row:
        problems.append(
            (URLS_COLUMN, f"too many URLs: {len(urls)} (max {limits.max_urls_per_row})")
        )
        return urls
    for number, url in enumerate(urls, start=1):
        reason = url_problem(url, limits)
        if reason is not None:
            problems.append((URLS_COLUMN, f"URL {number} {reason}"))
    return urls


# One regex scan instead of a Python loop per character: it was a large share of upload CPU.
_URL_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PORT = 65535


# The shape nearly every sheet URL has: http(s), a plain host name or IPv4 address, an optional
# port, then anything without whitespace. A URL of this shape passes every check below, so it
# skips urlsplit, which was 60 % of the time to validate a 100k-row sheet; anything else
# (userinfo, IPv6, IDN, spaces...) takes the full path and gets its specific error. The host
# part cannot hold "@", so a URL with credentials never takes the fast path.
_PLAIN_URL = re.compile(r"(?i:https?)://[A-Za-z0-9.-]+(?::(?P<port>[0-9]{1,5}))?(?:[/?#]\S*)?")
# A cell of such URLs joined by commas, ports at most 65535, nothing in a URL that split_urls
# would split on or url_problem would refuse (whitespace, ",", ";", control characters).
_PORT = r"(?::(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_CELL_URL = r"(?i:https?)://[A-Za-z0-9.-]+" + _PORT + r"(?:[/?#][^\s,;\x00-\x1f\x7f]*)?"
_PLAIN_CELL = re.compile(f"{_CELL_URL}(?:,{_CELL_URL})*")


def url_problem(url: str, limits: SheetLimits) -> str | None:
    """Why one URL cannot be used, or None."""
    if len(url) > limits.max_url_length:
        return f"is longer than {limits.max_url_length} characters"
    if _URL_CONTROL_CHARS.search(url):
        return f"contains control characters: {show(url)}"
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None and int(plain["port"] or 0) <= _MAX_PORT:
        return _host_problem(url, limits)
    return _parsed_url_problem(url, limits)


def _parsed_url_problem(url: str, limits: SheetLimits) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return f"is not a valid URL: {show(url)}"
    if parts.scheme.lower() not in ("http", "https") or not url[len(parts.scheme) :].startswith(
        "://"
    ):
        return f"is not an absolute http(s) URL: {show(url)}"
    if not parts.hostname:
        return f"has no host: {show(url)}"
    if "@" in parts.netloc:
        # Not echoed: the point is that the cell holds a password.
        return (
            "has a user name or password in it (user:password@host); image downloads never "
            "send credentials, so it could never be fetched"
        )
    return _host_problem(url, limits)


def _host_problem(url: str, limits: SheetLimits) -> str | None:
    if limits.url_check is not None:
        reason = limits.url_check(url)
        if reason is not None:
            return _not_allowed(reason, url)
    return None


def _not_allowed(reason: str, url: str) -> str:
    return f"is not allowed ({reason}): {show(url)}"
