"""A metric: ``metric(prediction, reference, spacing_zyx) -> float`` on binary ``(z, y, x)`` masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sensitivity(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Share of the reference's voxels that the prediction found (1.0 when the reference is empty)."""
    pred, ref = np.asarray(prediction) != 0, np.asarray(reference) != 0
    return float((pred & ref).sum() / ref.sum()) if ref.any() else 1.0
