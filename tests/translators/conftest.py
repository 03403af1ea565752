"""Tiny unpaired 'MR' and 'CT' volumes: a bright disc on -1 background, with different intensity profiles."""

from __future__ import annotations

import numpy as np
import pytest


def _disc_volume(depth: int, size: int, inside: float, rim: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx) / (size / 2)
    vol = np.full((depth, size, size), -1.0, np.float32)
    for z in range(depth):
        scale = 0.7 + 0.1 * np.sin(z)
        vol[z][r < scale] = rim
        vol[z][r < scale * 0.5] = inside
    return np.clip(vol + rng.normal(0, 0.02, vol.shape).astype(np.float32) * (vol > -1), -1, 1)


@pytest.fixture
def unpaired() -> tuple[list[np.ndarray], list[np.ndarray]]:
    source = [_disc_volume(4, 16, inside=0.8, rim=-0.2, seed=i) for i in range(2)]
    target = [_disc_volume(3, 16, inside=-0.3, rim=0.5, seed=10 + i) for i in range(2)]
    return source, target


@pytest.fixture
def unpaired_large() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """48x48 slices: large enough that torch's CPU kernels split one batch's writes between threads."""
    source = [_disc_volume(6, 48, inside=0.8, rim=-0.2, seed=i) for i in range(2)]
    target = [_disc_volume(6, 48, inside=-0.3, rim=0.5, seed=10 + i) for i in range(2)]
    return source, target
