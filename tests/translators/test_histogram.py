"""histogram_matching: quantile mapping on the foreground, background untouched; identity: a copy."""

from __future__ import annotations

import numpy as np
import pytest

from da_seg.errors import DataError
from da_seg.registry import TRANSLATORS


def test_identity_returns_the_input() -> None:
    vol = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = TRANSLATORS.create("identity").fit([vol], [vol]).translate(vol)
    np.testing.assert_array_equal(out, vol)
    assert out is not vol


def test_histogram_matching_maps_quantiles() -> None:
    # Source foreground uniform on {0.0, 0.1, ..., 0.9}, target on {-0.5, -0.4, ..., 0.4}: a shift by -0.5.
    src = np.full((1, 4, 10), -1.0, np.float32)
    src[0, 1] = np.arange(10) / 10
    tgt = np.full((1, 4, 10), -1.0, np.float32)
    tgt[0, 2] = np.arange(10) / 10 - 0.5
    hm = TRANSLATORS.create("histogram_matching", quantiles=10).fit([src], [tgt])
    out = hm.translate(src)
    np.testing.assert_allclose(out[0, 1], src[0, 1] - 0.5, atol=1e-6)
    assert (out[0, [0, 2, 3]] == -1).all()  # background untouched
    probe = np.array([[[0.05, 0.95, 2.0 - 1.5]]], np.float32)  # between knots: linear; beyond: last level
    np.testing.assert_allclose(hm.translate(probe)[0, 0], [-0.45, 0.4, 0.0], atol=1e-6)


def test_histogram_matching_is_monotone_with_ties() -> None:
    rng = np.random.default_rng(0)
    src = np.round(rng.uniform(-0.9, 1, (3, 8, 8)), 1).astype(np.float32)  # many ties
    tgt = rng.normal(0, 0.3, (3, 8, 8)).clip(-0.98, 1).astype(np.float32)
    hm = TRANSLATORS.create("histogram_matching").fit([src], [tgt])
    x = np.linspace(-0.98, 1, 200, dtype=np.float32).reshape(1, 1, -1)
    assert (np.diff(hm.translate(x).ravel()) >= 0).all()


def test_histogram_matching_errors() -> None:
    hm = TRANSLATORS.create("histogram_matching")
    with pytest.raises(DataError, match="fit"):
        hm.translate(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(DataError, match="no source voxels"):
        hm.fit([np.full((1, 2, 2), -1.0, np.float32)], [np.zeros((1, 2, 2), np.float32)])
