"""The ``identity`` translator: no adaptation (the segmenter sees the source image as is), a lower bound."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from da_seg.files import read_json, write_json
from da_seg.translators.base import META, check_volume


class Identity:
    """Returns the input volume unchanged; `fit` learns nothing."""

    name = "identity"

    def fit(
        self,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        *,
        workdir: Path | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
    ) -> Identity:
        return self

    def translate(self, volume: np.ndarray) -> np.ndarray:
        return check_volume(volume).copy()

    def save(self, directory: Path) -> None:
        write_json(Path(directory) / META, {"component": self.name})

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> Identity:
        read_json(Path(directory) / META)
        return cls()
