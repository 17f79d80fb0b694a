"""Settings come from IMGBATCH_ variables, and refuse what would be unsafe to run with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imgbatch.core.settings import Settings


def test_settings_are_read_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBATCH_JPEG_QUALITY", "70")
    monkeypatch.setenv("IMGBATCH_ALLOWED_PORTS", "[443, 8443]")
    settings = Settings()
    assert settings.jpeg_quality == 70
    assert settings.allowed_ports == [443, 8443]
    assert settings.allow_private_networks is False
    assert settings.auth_disabled is False


@pytest.mark.parametrize("field", ["mongodb_url", "redis_url"])
@pytest.mark.parametrize("password", ["changethis", "ChangeMe", "password"])
def test_placeholder_passwords_are_refused(field: str, password: str) -> None:
    url = {
        "mongodb_url": f"mongodb://app:{password}@db.internal:27017/",
        "redis_url": f"redis://:{password}@cache.internal:6379/0",
    }[field]
    with pytest.raises(ValidationError, match="placeholder password"):
        Settings(**{field: url})


def test_real_passwords_and_no_passwords_are_accepted() -> None:
    settings = Settings(
        mongodb_url="mongodb://app:k3x9-Lq2@db.internal/", redis_url="redis://cache/0"
    )
    assert settings.require_mongodb_url().startswith("mongodb://app:")


@pytest.mark.parametrize("quality", [0, 96])
def test_out_of_range_values_are_refused(quality: int) -> None:
    with pytest.raises(ValidationError):
        Settings(jpeg_quality=quality)


def test_the_webhook_retry_schedule_must_not_be_empty() -> None:
    with pytest.raises(ValidationError):
        Settings(webhook_retry_schedule=[])


def test_storage_is_local_unless_named_and_presigned_redirects_need_s3() -> None:
    settings = Settings()
    assert (settings.storage, settings.media_redirect, settings.media_base_url) == (
        "local",
        "stream",
        None,
    )
    with pytest.raises(ValidationError, match="MEDIA_REDIRECT=presigned needs"):
        Settings(media_redirect="presigned")
    assert Settings(storage="s3", media_redirect="presigned").media_redirect == "presigned"
    with pytest.raises(ValidationError):
        Settings(storage="disk")


def test_empty_urls_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBATCH_MEDIA_BASE_URL", "")
    monkeypatch.setenv("IMGBATCH_S3_ENDPOINT_URL", "")
    settings = Settings()
    assert settings.media_base_url is None
    assert settings.s3_endpoint_url is None
    with pytest.raises(ValidationError):
        Settings(media_base_url="not a url")
