"""Output profiles: which variants (format, quality, size) each input image becomes.

A :class:`Profile` is an ordered list of :class:`Variant`; the first is the **primary**, whose
URL is what ``output_image_urls`` and the result CSV's ``Output Image Urls`` hold. Two are built
in: ``default`` (exactly the service's original output, one full-size JPEG) and ``storefront``
(the same JPEG plus WebP sizes for a shop front). Operators add more with
``IMGBATCH_PROFILES``; see :func:`available_profiles`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

from PIL import features

from imgbatch.core.settings import Settings
from imgbatch.imaging.quality import Checks


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    WEBP = "webp"
    AVIF = "avif"
    PNG = "png"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.JPEG else self.value

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"


#: The quality a variant gets when its definition leaves it out, per format. WebP q75 and AVIF
#: q55 were chosen by measurement (docs/profiles-and-outputs.md, "Profiles"); PNG is lossless
#: and ignores it.
DEFAULT_QUALITY: Final = {OutputFormat.WEBP: 75, OutputFormat.AVIF: 55, OutputFormat.PNG: 100}

DEFAULT_PROFILE = "default"
STOREFRONT_PROFILE = "storefront"
PRIMARY_VARIANT = "original"
MAX_VARIANTS: Final = 8
_MIN_EDGE, _MAX_EDGE = 16, 16384
_PROFILE_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# Variant names end up in storage keys and in CSV headers: keep them plain.
_VARIANT_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Bumped whenever rendering changes what a variant's bytes are for the same definition, so
# content-addressed outputs made by older code are not taken for new ones. 2: a box the source
# does not reach gives the full-size output; BICUBIC after reduce(). 3: libvips' Lanczos-3 after
# reduce() (imaging.resample).
RENDER_VERSION: Final = 3


class ProfileError(ValueError):
    """A profile definition that cannot be used (bad name, format, quality or size)."""


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    format: OutputFormat
    quality: int
    # Bounds the long edge; keeps the aspect ratio; never upscales. None: full size.
    max_edge: int | None = None

    def __post_init__(self) -> None:
        if not _VARIANT_NAME.match(self.name):
            raise ProfileError(
                f"variant name {self.name!r} must be 1-32 lower-case letters, digits or _,"
                " starting with a letter"
            )
        try:
            OutputFormat(self.format)
        except ValueError:
            raise ProfileError(
                f"variant {self.name!r}: format must be one of "
                f"{', '.join(f.value for f in OutputFormat)}, got {self.format!r}"
            ) from None
        if not 1 <= self.quality <= 100:
            raise ProfileError(f"variant {self.name!r}: quality must be 1-100")
        if self.max_edge is not None and not _MIN_EDGE <= self.max_edge <= _MAX_EDGE:
            raise ProfileError(
                f"variant {self.name!r}: max_edge must be {_MIN_EDGE}-{_MAX_EDGE} or null"
            )
        if self.format == OutputFormat.AVIF and not features.check_module("avif"):
            raise ProfileError(f"variant {self.name!r}: this Pillow build cannot write AVIF")

    @property
    def column(self) -> str:
        """Its result CSV column: ``thumbnail`` -> ``Thumbnail Image Urls``."""
        return f"{self.name[:1].upper()}{self.name[1:]} Image Urls"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    variants: tuple[Variant, ...]
    # The catalogue-quality thresholds (imaging.quality). They change no output, so they are
    # not part of the digest: outputs are shared across profiles that differ only in them.
    checks: Checks = field(default_factory=Checks)

    def __post_init__(self) -> None:
        if not _PROFILE_NAME.match(self.name):
            raise ProfileError(
                f"profile name {self.name!r} must be 1-32 lower-case letters, digits, _ or -"
            )
        if not 1 <= len(self.variants) <= MAX_VARIANTS:
            raise ProfileError(f"profile {self.name!r} needs 1-{MAX_VARIANTS} variants")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ProfileError(f"profile {self.name!r} repeats a variant name")

    @property
    def primary(self) -> Variant:
        return self.variants[0]

    @property
    def secondary(self) -> tuple[Variant, ...]:
        return self.variants[1:]

    def digest(self, *, jpeg_optimize: bool) -> str:
        """What the outputs depend on besides the source bytes: equal digests, equal outputs.

        The profile's name is left out on purpose: two names for the same variants share
        their outputs.
        """
        spec = {
            "version": RENDER_VERSION,
            "jpeg_optimize": jpeg_optimize,
            "variants": [asdict(variant) for variant in self.variants],
        }
        encoded = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]


def default_profile(jpeg_quality: int) -> Profile:
    """Exactly the original output: one full-size JPEG at ``IMGBATCH_JPEG_QUALITY``."""
    return Profile(
        DEFAULT_PROFILE, (Variant(PRIMARY_VARIANT, OutputFormat.JPEG, jpeg_quality, None),)
    )


def storefront_profile(jpeg_quality: int) -> Profile:
    webp = DEFAULT_QUALITY[OutputFormat.WEBP]
    return Profile(
        STOREFRONT_PROFILE,
        (
            *default_profile(jpeg_quality).variants,
            Variant("thumbnail", OutputFormat.WEBP, webp, 150),
            Variant("medium", OutputFormat.WEBP, webp, 600),
            Variant("large", OutputFormat.WEBP, webp, 1200),
        ),
    )


def parse_profile(name: str, definition: Any, *, jpeg_quality: int) -> Profile:
    """One operator profile from its JSON: a list of ``{name, format, quality?, max_edge?}``,
    or ``{"variants": [...], "checks": {...}}`` to set its quality thresholds too."""
    checks = Checks()
    if isinstance(definition, Mapping):
        unknown = set(definition) - {"variants", "checks"}
        if unknown:
            raise ProfileError(
                f"profile {name!r} must be a list of variants, or an object of variants and "
                "checks; unknown field(s) " + ", ".join(sorted(map(str, unknown)))
            )
        checks = _parse_checks(name, definition.get("checks", {}))
        definition = definition.get("variants")
    if not isinstance(definition, Sequence) or isinstance(definition, str | bytes):
        raise ProfileError(f"profile {name!r} must be a list of variants")
    variants = []
    for position, item in enumerate(definition):
        if not isinstance(item, Mapping):
            raise ProfileError(f"profile {name!r}: variant {position + 1} must be an object")
        unknown = set(item) - {"name", "format", "quality", "max_edge"}
        if unknown:
            raise ProfileError(
                f"profile {name!r}: variant {position + 1} has unknown field(s) "
                + ", ".join(sorted(map(str, unknown)))
            )
        try:
            output = OutputFormat(str(item.get("format", "")).lower())
        except ValueError:
            raise ProfileError(
                f"profile {name!r}: variant {position + 1} format must be one of "
                f"{', '.join(f.value for f in OutputFormat)}"
            ) from None
        quality = item.get("quality", DEFAULT_QUALITY.get(output, jpeg_quality))
        max_edge = item.get("max_edge")
        if not isinstance(quality, int) or isinstance(quality, bool):
            raise ProfileError(f"profile {name!r}: variant {position + 1} quality must be a number")
        if max_edge is not None and (not isinstance(max_edge, int) or isinstance(max_edge, bool)):
            raise ProfileError(
                f"profile {name!r}: variant {position + 1} max_edge must be a number or null"
            )
        variants.append(Variant(str(item.get("name", "")), output, quality, max_edge))
    return Profile(name, tuple(variants), checks)


def _parse_checks(name: str, definition: Any) -> Checks:
    if not isinstance(definition, Mapping):
        raise ProfileError(f"profile {name!r}: checks must be an object")
    fields = set(Checks.__dataclass_fields__)
    unknown = set(definition) - fields
    if unknown:
        raise ProfileError(
            f"profile {name!r}: checks has unknown field(s) {', '.join(sorted(map(str, unknown)))}"
            f"; known: {', '.join(sorted(fields))}"
        )
    for key, value in definition.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ProfileError(f"profile {name!r}: checks.{key} must be a number or null")
    try:
        return Checks(**definition)
    except ValueError as exc:
        raise ProfileError(f"profile {name!r}: {exc}") from None


def available_profiles(settings: Settings) -> dict[str, Profile]:
    """The built-ins, then the operator's ``IMGBATCH_PROFILES`` in their order.

    Raises :class:`ProfileError` for a bad definition, so a misconfigured API refuses to start
    instead of refusing uploads. Built-in names cannot be redefined: ``default`` is the
    contract for clients that ask for nothing, and a client that asks for ``storefront`` must
    get the same thing on every installation.
    """
    profiles = {
        DEFAULT_PROFILE: default_profile(settings.jpeg_quality),
        STOREFRONT_PROFILE: storefront_profile(settings.jpeg_quality),
    }
    for name, definition in settings.profiles.items():
        if name in profiles:
            raise ProfileError(f"IMGBATCH_PROFILES cannot redefine the built-in profile {name!r}")
        profiles[name] = parse_profile(name, definition, jpeg_quality=settings.jpeg_quality)
    return profiles
