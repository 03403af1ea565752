"""Fidelity metrics (SynCT vs CT in HU): hand-computed values, the mask, SSIM against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from da_seg.metrics.fidelity import mae_hu, mean_error_hu, psnr, ssim
from da_seg.registry import METRICS

CT = np.array([[[0.0, 100.0], [-1000.0, 1000.0]]])
SYNCT = CT + np.array([[[10.0, -30.0], [500.0, 20.0]]])  # the -1000 voxel (air) is badly off
BODY = CT > -400


@pytest.mark.parametrize(
    ("name", "perfect"), [("mae_hu", 0.0), ("mean_error_hu", 0.0), ("psnr", math.inf), ("ssim", 1.0)]
)
def test_registered_with_the_pipeline_signature(name: str, perfect: float) -> None:
    ct = np.tile(CT, (2, 4, 4))  # (2, 8, 8)
    assert METRICS.get(name)(ct, ct, mask=ct > -400) == pytest.approx(perfect)


@pytest.mark.parametrize(
    ("metric", "mask", "expected"),
    [
        (mae_hu, None, (10 + 30 + 500 + 20) / 4),
        (mae_hu, BODY, (10 + 30 + 20) / 3),
        (mean_error_hu, None, (10 - 30 + 500 + 20) / 4),
        (mean_error_hu, BODY, (10 - 30 + 20) / 3),
        # L = reference range inside the mask = 1000 - 0; MSE = (100 + 900 + 400) / 3
        (psnr, BODY, 10 * math.log10(1000**2 / (1400 / 3))),
        (psnr, None, 10 * math.log10(2000**2 / ((100 + 900 + 250000 + 400) / 4))),
    ],
)
def test_hand_computed(metric, mask, expected) -> None:
    assert metric(SYNCT, CT, spacing=(1.0, 1.0, 1.0), mask=mask) == pytest.approx(expected)


def test_psnr_with_a_fixed_range() -> None:
    assert psnr(SYNCT, CT, mask=BODY, data_range=4095) == pytest.approx(10 * math.log10(4095**2 / (1400 / 3)))


def test_ssim_matches_skimage_on_the_interior() -> None:
    # Our map is full-size (reflect padding); skimage averages the same map over the interior whose 11x11 windows
    # fit inside the image. With that interior as the mask the two must agree.
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 1500, (2, 40, 36))
    synct = ct + rng.normal(0, 300, ct.shape)
    interior = np.zeros(ct.shape, bool)
    interior[:, 5:-5, 5:-5] = True
    ours = ssim(synct, ct, mask=interior, data_range=2500.0)
    ref = np.mean(
        [
            structural_similarity(s, c, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2500)
            for s, c in zip(synct, ct, strict=True)
        ]
    )
    assert ours == pytest.approx(ref, abs=1e-6)
    assert 0 < ssim(synct, ct) < 1


def test_errors() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        mae_hu(CT, CT[:, :1])
    with pytest.raises(ValueError, match="empty"):
        mae_hu(CT, CT, mask=np.zeros_like(CT))
    with pytest.raises(ValueError, match="6x6"):
        ssim(CT, CT)
