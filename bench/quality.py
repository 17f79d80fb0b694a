"""SSIM over luma, in numpy: the perceptual check the storefront's tuning is held to.

Why not a package: none in the lock computes it (scikit-image is ~100 MB with scipy for one
function; pytorch-msssim needs torch). This is Wang et al. (2004) as scikit-image's
``structural_similarity`` computes it by default: BT.601 luma, a 7x7 uniform window, K1 0.01,
K2 0.03, L 255, sample covariances, the mean over every full window.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

_WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def luma(data: bytes) -> NDArray[np.float64]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.float64)


def _window_means(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean over every full 7x7 window, from a summed-area table."""
    table = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    table[1:, 1:] = a.cumsum(0).cumsum(1)
    w = _WINDOW
    sums = table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]
    return sums / (w * w)


def ssim(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    if a.shape != b.shape:
        raise ValueError(f"sizes differ: {a.shape} vs {b.shape}")
    n = _WINDOW * _WINDOW
    ux, uy = _window_means(a), _window_means(b)
    # Sample (n - 1) covariances, as scikit-image's default.
    vx = (_window_means(a * a) - ux * ux) * n / (n - 1)
    vy = (_window_means(b * b) - uy * uy) * n / (n - 1)
    vxy = (_window_means(a * b) - ux * uy) * n / (n - 1)
    s = ((2 * ux * uy + _C1) * (2 * vxy + _C2)) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
    return float(s.mean())


def ssim_bytes(a: bytes, b: bytes) -> float:
    return ssim(luma(a), luma(b))
