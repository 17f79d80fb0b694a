"""Codec CPU per image, by output profile: ``storefront`` against ``default`` on the batch's
photo mix, one core, no I/O.

Each round renders every photo once under each profile, the two interleaved photo by photo, so
a noisy neighbour slows both alike; the figure is the median over rounds of ``process_time``
(the process's CPU, every thread: libvips resizes on one of its own; decode, resizes,
encodes, the colour and the placeholder). The per-image
work is the worker's own (``imaging.open_image`` + ``imaging.render_profile``); storing the
outputs is not included.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.data import BIG_PHOTO, DEFAULT_PHOTOS, photo_bytes
from bench.quality import luma, ssim
from imgbatch.core.settings import Settings
from imgbatch.imaging import Profile, available_profiles, compress_image, open_image, render_profile
from imgbatch.worker.allocator import reuse_large_buffers

_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class ProfileCost:
    photo: str
    in_mix: bool
    compress_ms: float  # the service's old path: one JPEG, nothing else
    default_ms: float  # the default profile: the same JPEG, plus colour and placeholder
    storefront_ms: float

    @property
    def ratio(self) -> float:
        return self.storefront_ms / self.default_ms


def _render_ms(data: bytes, profile: Profile) -> float:
    started = time.process_time()
    decoded = open_image(data, max_pixels=_MAX_PIXELS)
    try:
        render_profile(decoded, profile.variants)
    finally:
        decoded.close()
    return (time.process_time() - started) * 1000


def _compress_ms(data: bytes) -> float:
    started = time.process_time()
    compress_image(data, quality=50, max_pixels=_MAX_PIXELS)
    return (time.process_time() - started) * 1000


def measure(mix: Sequence[str], extra: Sequence[str], rounds: int) -> list[ProfileCost]:
    # The worker's malloc settings (worker/allocator.py), so that large buffers cost what they
    # cost in a pool process: with glibc's sliding mmap threshold, the ratio moved with what
    # the bench process had allocated before (2.05 after the codec phases, 1.93-1.97 alone).
    reuse_large_buffers()
    profiles = available_profiles(Settings())
    default, storefront = profiles["default"], profiles["storefront"]
    names = [*mix, *extra]
    photos = {name: photo_bytes(name) for name in names}
    samples: dict[tuple[str, str], list[float]] = {}
    for data in photos.values():  # warm up: imports, allocator, codec tables
        _render_ms(data, storefront)
    for _ in range(rounds):
        for name, data in photos.items():
            samples.setdefault((name, "compress"), []).append(_compress_ms(data))
            samples.setdefault((name, "default"), []).append(_render_ms(data, default))
            samples.setdefault((name, "storefront"), []).append(_render_ms(data, storefront))
    return [
        ProfileCost(
            photo=name,
            in_mix=name in mix,
            compress_ms=statistics.median(samples[name, "compress"]),
            default_ms=statistics.median(samples[name, "default"]),
            storefront_ms=statistics.median(samples[name, "storefront"]),
        )
        for name in names
    ]


def mix_ratio(costs: Sequence[ProfileCost]) -> float:
    """Storefront over default, per image of the mix (each photo weighted equally)."""
    mix = [c for c in costs if c.in_mix]
    return sum(c.storefront_ms for c in mix) / sum(c.default_ms for c in mix)


# Each storefront WebP's SSIM (bench/quality.py) against the same size made losslessly from
# the decoded source, lowest over the mix, as the shipped settings measured it (2026-12-07:
# 0.925, 0.900, 0.875). A cheaper setting must keep every variant at or above its floor, so
# the codec ratio above cannot be bought with visible quality. Only a variant encoded as its
# own object is held to its floor: one the size of an earlier variant is that variant's object
# (the full-size original JPEG, for a source no larger than its box), whose quality is
# JPEG_QUALITY's; :func:`fidelity` reports those apart.
SSIM_FLOORS: dict[str, float] = {"thumbnail": 0.92, "medium": 0.895, "large": 0.87}


@dataclass(frozen=True)
class Fidelity:
    #: Lowest SSIM per variant over the photos where it is its own WebP.
    own: dict[str, float]
    #: (photo, variant, owner) -> SSIM, for each variant that is another variant's object.
    shared: dict[tuple[str, str, str], float]


def fidelity_detail(mix: Sequence[str]) -> Fidelity:
    storefront = available_profiles(Settings())["storefront"]
    own: dict[str, float] = {}
    shared: dict[tuple[str, str, str], float] = {}
    for name in mix:
        decoded = open_image(photo_bytes(name), max_pixels=_MAX_PIXELS)
        try:
            rendition = render_profile(decoded, storefront.variants)
            for variant in storefront.secondary:
                encoded = rendition.outputs[variant.name]
                size = (encoded.width, encoded.height)
                with decoded.image.resize(size, Image.Resampling.LANCZOS) as reference:
                    score = ssim(np.asarray(reference.convert("L"), np.float64), luma(encoded.data))
                owner = rendition.owner[variant.name]
                if owner == variant.name:
                    own[variant.name] = min(score, own.get(variant.name, 1.0))
                else:
                    shared[name, variant.name, owner] = score
        finally:
            decoded.close()
    return Fidelity(own, shared)


def fidelity(mix: Sequence[str]) -> dict[str, float]:
    """The lowest SSIM of each storefront WebP variant over ``mix``, where it is its own
    object (see SSIM_FLOORS)."""
    return fidelity_detail(mix).own


def main() -> None:
    """This phase alone: ``python -m bench.profiles [rounds]``."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    costs = measure(DEFAULT_PHOTOS, [BIG_PHOTO], rounds)
    for cost in costs:
        extra = "" if cost.in_mix else "  (not in the mix)"
        print(
            f"{cost.photo:24s} default {cost.default_ms:6.1f} ms  storefront "
            f"{cost.storefront_ms:6.1f} ms  x{cost.ratio:.2f}{extra}"
        )
    print(f"mix: storefront / default = {mix_ratio(costs):.3f} (target <= 2)")
    detail = fidelity_detail(DEFAULT_PHOTOS)
    for variant, score in detail.own.items():
        print(f"SSIM {variant:9s} lowest {score:.3f} (floor {SSIM_FLOORS[variant]})")
    for (photo, variant, owner), score in detail.shared.items():
        print(f"SSIM {variant:9s} of {photo} is {owner}'s object: {score:.3f}")


if __name__ == "__main__":
    main()
