"""An intensity preset: a modality's values <-> [-1, 1], the range every network sees."""

from __future__ import annotations

import numpy as np


class MinMax:
    """Each volume's minimum and maximum map to -1 and 1 (for an MR, which has no absolute units)."""

    padding_value = -1.0  # what "outside the image" becomes when the common grid pads a volume

    @property
    def settings(self) -> dict[str, str]:
        """Rebuilds this preset (``INTENSITIES.build(settings)``) and is part of the data cache key."""
        return {"name": "example_minmax"}

    def fit(self, array: np.ndarray) -> dict[str, float]:
        """This volume's statistics, handed back to `forward` and `inverse`."""
        low, high = float(np.min(array)), float(np.max(array))
        return {"low": low, "high": max(high, low + 1e-6)}

    def forward(self, array: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """Modality units -> float32 in [-1, 1]."""
        s = stats or self.fit(array)
        return ((np.asarray(array, np.float32) - s["low"]) / (s["high"] - s["low"]) * 2 - 1).astype(np.float32)

    def inverse(self, array: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """[-1, 1] -> modality units, with the statistics `fit` returned for that volume."""
        if not stats:
            raise ValueError("example_minmax: inverse needs the volume's stats from fit()")
        unit = np.clip(np.asarray(array, np.float32), -1.0, 1.0)
        return ((unit + 1) / 2 * (stats["high"] - stats["low"]) + stats["low"]).astype(np.float32)
