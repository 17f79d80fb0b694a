"""Profiles: the built-ins, operator definitions and what makes one refused."""

from __future__ import annotations

import json

import pytest

from imgbatch.core.settings import Settings
from imgbatch.imaging.profiles import (
    OutputFormat,
    Profile,
    ProfileError,
    Variant,
    available_profiles,
    parse_profile,
)
from imgbatch.imaging.quality import Checks


def test_default_is_one_full_size_jpeg_at_the_configured_quality() -> None:
    profiles = available_profiles(Settings(jpeg_quality=63))
    default = profiles["default"]
    assert default.variants == (Variant("original", OutputFormat.JPEG, 63, None),)
    assert default.primary.name == "original"
    assert default.secondary == ()


def test_storefront_adds_three_webp_sizes_to_the_default_output() -> None:
    storefront = available_profiles(Settings())["storefront"]
    assert storefront.primary == Variant("original", OutputFormat.JPEG, 50, None)
    assert [(v.name, v.format, v.quality, v.max_edge) for v in storefront.secondary] == [
        ("thumbnail", OutputFormat.WEBP, 75, 150),
        ("medium", OutputFormat.WEBP, 75, 600),
        ("large", OutputFormat.WEBP, 75, 1200),
    ]
    assert [v.column for v in storefront.secondary] == [
        "Thumbnail Image Urls",
        "Medium Image Urls",
        "Large Image Urls",
    ]


def test_operator_profiles_come_from_json_after_the_built_ins() -> None:
    raw = json.dumps(
        {
            "catalog": [
                {"name": "hero", "format": "jpeg", "quality": 80},
                {"name": "tile", "format": "AVIF", "max_edge": 300},
                {"name": "icon", "format": "png", "max_edge": 64},
            ]
        }
    )
    settings = Settings.model_validate({"profiles": json.loads(raw)})
    profiles = available_profiles(settings)
    assert list(profiles) == ["default", "storefront", "catalog"]
    catalog = profiles["catalog"]
    assert catalog.primary == Variant("hero", OutputFormat.JPEG, 80, None)
    # Left out, the quality is the measured default of the format.
    assert catalog.variants[1] == Variant("tile", OutputFormat.AVIF, 55, 300)
    assert catalog.variants[2].format == OutputFormat.PNG


def test_profiles_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "IMGBATCH_PROFILES", '{"tiny": [{"name": "small", "format": "webp", "max_edge": 90}]}'
    )
    assert available_profiles(Settings())["tiny"].primary.max_edge == 90


PNG = [{"name": "x", "format": "png"}]


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        ({"default": [{"name": "x", "format": "jpeg"}]}, "cannot redefine the built-in"),
        ({"storefront": [{"name": "x", "format": "jpeg"}]}, "cannot redefine the built-in"),
        ({"Bad Name": [{"name": "x", "format": "jpeg"}]}, "profile name"),
        ({"p": []}, "needs 1-8 variants"),
        ({"p": {"name": "x"}}, "must be a list"),
        ({"p": [{"name": "x", "format": "gif"}]}, "format must be one of"),
        ({"p": [{"name": "x", "format": "jpeg", "quality": 0}]}, "quality must be 1-100"),
        ({"p": [{"name": "x", "format": "jpeg", "quality": "high"}]}, "quality must be"),
        ({"p": [{"name": "x", "format": "jpeg", "max_edge": 4}]}, "max_edge must be"),
        ({"p": [{"name": "x", "format": "jpeg", "max_edge": 1e9}]}, "max_edge must be"),
        ({"p": [{"name": "x", "format": "jpeg"}, {"name": "x", "format": "webp"}]}, "repeats"),
        ({"p": [{"name": "../x", "format": "jpeg"}]}, "variant name"),
        ({"p": [{"name": "x", "format": "jpeg", "size": 3}]}, "unknown field"),
        ({"p": [{"name": f"v{i}", "format": "webp"} for i in range(9)]}, "needs 1-8 variants"),
        ({"p": {"variants": [{"name": "x", "format": "jpeg"}], "checks": []}}, "must be an obj"),
        ({"p": {"variants": [], "checks": {}}}, "needs 1-8 variants"),
        ({"p": {"variants": PNG, "checks": {"dpi": 1}}}, "unknown"),
        (
            {"p": {"variants": PNG, "checks": {"max_aspect": "3"}}},
            "must be a number",
        ),
        (
            {"p": {"variants": PNG, "checks": {"max_aspect": 0.5}}},
            "at least 1",
        ),
        (
            {
                "p": {
                    "variants": [{"name": "x", "format": "png"}],
                    "checks": {"min_white_border": 2},
                }
            },
            "share of the border",
        ),
    ],
)
def test_bad_definitions_are_refused_with_a_reason(definition: object, reason: str) -> None:
    settings = Settings.model_validate({"profiles": definition})
    with pytest.raises(ProfileError, match=reason):
        available_profiles(settings)


def test_digest_follows_the_variants_not_the_name() -> None:
    variants = (Variant("a", OutputFormat.WEBP, 75, 100),)
    one, two = Profile("one", variants), Profile("two", variants)
    assert one.digest(jpeg_optimize=False) == two.digest(jpeg_optimize=False)
    assert one.digest(jpeg_optimize=False) != one.digest(jpeg_optimize=True)
    other = Profile("one", (Variant("a", OutputFormat.WEBP, 76, 100),))
    assert other.digest(jpeg_optimize=False) != one.digest(jpeg_optimize=False)


def test_parse_rejects_non_objects() -> None:
    with pytest.raises(ProfileError, match="must be an object"):
        parse_profile("p", ["jpeg"], jpeg_quality=50)


def test_a_profile_object_sets_quality_checks_that_leave_the_digest_alone() -> None:
    variants = [{"name": "main", "format": "jpeg", "quality": 80}]
    plain = parse_profile("p", variants, jpeg_quality=80)
    strict = parse_profile(
        "p",
        {"variants": variants, "checks": {"min_long_edge": 1000, "min_white_border": 0.9}},
        jpeg_quality=80,
    )
    assert plain.checks == Checks()
    assert (strict.checks.min_long_edge, strict.checks.min_white_border) == (1000, 0.9)
    assert strict.checks.min_sharpness == Checks().min_sharpness
    # Thresholds change no output: the same outputs are shared.
    assert strict.digest(jpeg_optimize=False) == plain.digest(jpeg_optimize=False)
