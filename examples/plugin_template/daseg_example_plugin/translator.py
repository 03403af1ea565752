"""A translator: learns source -> target on normalised volumes, saves itself to a folder and loads back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def _moments(volumes: Sequence[np.ndarray], threshold: float) -> tuple[float, float]:
    values = np.concatenate([np.asarray(v)[np.asarray(v) > threshold] for v in volumes])
    return float(values.mean()), float(values.std()) + 1e-6


class MomentMatching:
    """Shift and scale the foreground so its mean and standard deviation become the target's.

    Volumes are ``(z, H, W)`` float arrays in [-1, 1] on the common grid; voxels at or below ``threshold`` are
    background (-1 after normalisation) and keep their value.
    """

    name = "example_moments"  # the registered name: save() writes it, load_translator() reads it back

    def __init__(self, threshold: float = -0.99) -> None:
        self.threshold = threshold
        self.source = self.target = (0.0, 1.0)

    def fit(
        self,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        *,
        workdir: Path | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
    ) -> MomentMatching:
        self.source = _moments(source, self.threshold)
        self.target = _moments(target, self.threshold)
        return self

    def translate(self, volume: np.ndarray) -> np.ndarray:
        """``(z, H, W)`` source volume in [-1, 1] -> ``(z, H, W)`` float32 target-like volume in [-1, 1]."""
        array = np.asarray(volume, dtype=np.float32)
        (ms, ss), (mt, st) = self.source, self.target
        out = np.where(array > self.threshold, (array - ms) / ss * st + mt, array)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"component": self.name, "threshold": self.threshold, "source": self.source, "target": self.target}
        (directory / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> MomentMatching:
        meta = json.loads((Path(directory) / "meta.json").read_text())
        model = cls(meta["threshold"])
        model.source, model.target = tuple(meta["source"]), tuple(meta["target"])
        return model
