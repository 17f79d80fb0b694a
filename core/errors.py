"""Errors that cross layers: API errors carry their HTTP status; image failures carry a code."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ImgbatchError(Exception):
    """Base of every error the API turns into a JSON ``{"detail": ...}`` response."""

    status_code: int = 400

    def __init__(
        self, detail: Any, *, status_code: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}


class NotFound(ImgbatchError):
    status_code = 404


class Conflict(ImgbatchError):
    status_code = 409


class Gone(ImgbatchError):
    status_code = 410


class PayloadTooLarge(ImgbatchError):
    status_code = 413


class UnprocessableEntity(ImgbatchError):
    status_code = 422


class ServiceUnavailable(ImgbatchError):
    status_code = 503


class ImageErrorCode(StrEnum):
    """The fixed vocabulary of per-image failures shown to users."""

    DOWNLOAD_FAILED = "download_failed"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT_IMAGE = "corrupt_image"
    # Decoding would take (or took) more work than any sane image needs; see imaging/limits.py.
    DECODE_TIMEOUT = "decode_timeout"
    BLOCKED_ADDRESS = "blocked_address"
    WORKER_CRASH = "worker_crash"


class ImageFailure(Exception):
    """One image could not be processed; the rest of the batch goes on."""

    def __init__(self, code: ImageErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
