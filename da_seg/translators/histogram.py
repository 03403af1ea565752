"""The ``histogram_matching`` translator: a monotone intensity mapping by quantile matching (a classical baseline).

Foreground voxels (above ``threshold``, i.e. not the -1 background of a normalised image) of all source volumes
are pooled, and so are the target's; the mapping sends the source's q-th quantile to the target's q-th quantile,
with linear interpolation between ``quantiles`` levels and constant extension beyond the ends. Background voxels
keep their value. The mapping is global and voxelwise: it cannot invert contrast where MR and CT disagree (fat is
bright on T2 MR, dark on CT), which is what makes it a baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from da_seg.errors import ConfigError, DataError
from da_seg.files import read_json, write_json
from da_seg.translators.base import META, check_volume


def _foreground(volumes: Sequence[np.ndarray], threshold: float, what: str) -> np.ndarray:
    arrays = [check_volume(v) for v in volumes]
    values = np.concatenate([a[a > threshold] for a in arrays]) if arrays else np.empty(0, np.float32)
    if values.size == 0:
        raise DataError(f"histogram_matching: no {what} voxels above {threshold}; are the volumes normalised?")
    return values


class HistogramMatching:
    """Quantile mapping source -> target intensities, fitted on the foreground.

    Args:
        quantiles: number of quantile levels (evenly spaced in [0, 1]) that define the piecewise-linear map.
        threshold: voxels at or below it are background and are left alone.
    """

    name = "histogram_matching"

    def __init__(self, quantiles: int = 256, threshold: float = -0.99) -> None:
        if quantiles < 2:
            raise ConfigError(f"quantiles must be >= 2, got {quantiles}")
        self.quantiles, self.threshold = quantiles, threshold
        self.source_levels: np.ndarray | None = None
        self.target_levels: np.ndarray | None = None

    def fit(
        self,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        *,
        workdir: Path | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
    ) -> HistogramMatching:
        q = np.linspace(0.0, 1.0, self.quantiles)
        src = np.quantile(_foreground(source, self.threshold, "source"), q)
        tgt = np.quantile(_foreground(target, self.threshold, "target"), q)
        # np.interp needs strictly increasing knots: merge ties (flat stretches of the source histogram).
        src, first = np.unique(src, return_index=True)
        self.source_levels, self.target_levels = src, tgt[first]
        return self

    def translate(self, volume: np.ndarray) -> np.ndarray:
        if self.source_levels is None or self.target_levels is None:
            raise DataError("histogram_matching: call fit() (or load a fitted one) before translate()")
        array = check_volume(volume)
        out = array.copy()
        fg = array > self.threshold
        if len(self.source_levels) == 1:
            out[fg] = self.target_levels[0]
        else:
            out[fg] = np.interp(array[fg], self.source_levels, self.target_levels)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def save(self, directory: Path) -> None:
        if self.source_levels is None or self.target_levels is None:
            raise DataError("histogram_matching: nothing to save before fit()")
        write_json(
            Path(directory) / META,
            {
                "component": self.name,
                "config": {"quantiles": self.quantiles, "threshold": self.threshold},
                "source_levels": self.source_levels.tolist(),
                "target_levels": self.target_levels.tolist(),
            },
        )

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> HistogramMatching:
        meta = read_json(Path(directory) / META)
        model = cls(**meta.get("config", {}))
        model.source_levels = np.asarray(meta["source_levels"], dtype=np.float64)
        model.target_levels = np.asarray(meta["target_levels"], dtype=np.float64)
        return model
