"""Errors that cross layers: API errors carry their HTTP status; image failures carry a code."""

from __future__ import annotations

from enum import StrEnum
from http import HTTPStatus
from typing import Any, ClassVar

from pydantic import BaseModel, create_model

# What ``detail`` may hold: a sentence, or an object with a message and the specifics (the
# current status, every row error...); FastAPI's own 422 lists the invalid parameters.
ErrorDetail = str | dict[str, Any] | list[dict[str, Any]]


class ImgbatchError(Exception):
    """Base of every error the API turns into a JSON ``{"detail": ...}`` response."""

    status_code: int = 400
    # Shown in the API docs for this error's responses; the status phrase when empty.
    description: ClassVar[str] = ""
    _schemas: ClassVar[dict[type[ImgbatchError], type[BaseModel]]] = {}

    def __init__(
        self, detail: Any, *, status_code: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}

    @classmethod
    def schema(cls) -> type[BaseModel]:
        """The body of this error, ``{"detail": ...}``, as a model for the OpenAPI document."""
        if cls not in ImgbatchError._schemas:
            ImgbatchError._schemas[cls] = create_model(
                cls.__name__, __doc__=cls.docs_description(), detail=(ErrorDetail, ...)
            )
        return ImgbatchError._schemas[cls]

    @classmethod
    def docs_description(cls) -> str:
        return cls.description or HTTPStatus(cls.status_code).phrase


class BadRequest(ImgbatchError):
    status_code = 400
    description = "The body could not be parsed: malformed JSON, or a malformed multipart form"


class NotFound(ImgbatchError):
    status_code = 404
    description = "No such resource, or it belongs to another API key"


class Conflict(ImgbatchError):
    status_code = 409
    description = "Not possible in the resource's current state (the body says which)"


class Gone(ImgbatchError):
    status_code = 410
    description = "The request expired and its results were deleted"


class PayloadTooLarge(ImgbatchError):
    status_code = 413
    description = (
        "The body is larger than its cap: IMGBATCH_MAX_CSV_BYTES for a sheet, "
        "IMGBATCH_MAX_IMAGE_BYTES for an image, IMGBATCH_MAX_BODY_BYTES for anything else"
    )


class RangeNotSatisfiable(ImgbatchError):
    status_code = 416
    description = "The Range starts past the end of the file (Content-Range gives its size)"


class UnprocessableEntity(ImgbatchError):
    status_code = 422
    description = "The input is invalid: the body lists every problem"


class ServiceUnavailable(ImgbatchError):
    status_code = 503
    description = "MongoDB or Redis is unavailable; retry after Retry-After seconds"


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

    def __init__(self, code: ImageErrorCode, message: str, *, attempts: int = 1) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # Downloads made before giving up (transient failures are retried).
        self.attempts = attempts
