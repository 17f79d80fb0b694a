"""``GET /api/profiles``: the output profiles an upload may ask for."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from imgbatch.api.auth import OwnerDep, Unauthorized
from imgbatch.api.deps import ProfilesDep
from imgbatch.api.openapi import errors
from imgbatch.api.schemas import ChecksView, ProfilesView, ProfileView, VariantSpecView
from imgbatch.imaging.profiles import DEFAULT_PROFILE, STOREFRONT_PROFILE, Profile

router = APIRouter(tags=["profiles"])

_BUILTIN = frozenset({DEFAULT_PROFILE, STOREFRONT_PROFILE})


def profile_view(profile: Profile) -> ProfileView:
    return ProfileView(
        name=profile.name,
        builtin=profile.name in _BUILTIN,
        variants=[
            VariantSpecView(
                name=v.name, format=v.format.value, quality=v.quality, max_edge=v.max_edge
            )
            for v in profile.variants
        ],
        checks=ChecksView.model_validate(asdict(profile.checks)),
    )


@router.get("/api/profiles", response_model=ProfilesView, responses=errors(Unauthorized))
async def list_profiles(_: OwnerDep, profiles: ProfilesDep) -> ProfilesView:
    return ProfilesView(
        default=DEFAULT_PROFILE, profiles=[profile_view(p) for p in profiles.values()]
    )
