"""The translator contract (`Translator`), shared by the built-in translators and any plugin's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from da_seg.errors import ConfigError, DataError

META = "meta.json"


@runtime_checkable
class Translator(Protocol):
    """What the pipeline calls. Volumes are ``(z, H, W)`` float arrays in [-1, 1]."""

    name: str

    def fit(
        self,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        *,
        workdir: Path | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
    ) -> Translator:
        """Learn the mapping from unpaired source and target volumes; returns self."""
        ...

    def translate(self, volume: np.ndarray) -> np.ndarray:
        """``(z, H, W)`` source volume in [-1, 1] -> ``(z, H, W)`` target-domain volume in [-1, 1]."""
        ...

    def save(self, directory: Path) -> None:
        """Write ``meta.json`` (with ``component``) and whatever `load` needs into ``directory``."""
        ...

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> Translator:
        """Rebuild a translator written by `save`."""
        ...


@runtime_checkable
class ReversibleTranslator(Translator, Protocol):
    """A translator that also maps the target domain back to the source (a CycleGAN's second generator); the
    ``two_way`` method segments real target images through it (`da_seg.segmentation.TwoWaySegmenter`)."""

    def translate_back(self, volume: np.ndarray) -> np.ndarray:
        """``(z, H, W)`` target-domain volume in [-1, 1] -> ``(z, H, W)`` source-domain volume in [-1, 1]."""
        ...


def require_reversible(translator: object) -> ReversibleTranslator:
    """``translator`` itself, or a `ConfigError` saying that the two-way method needs a translator with an inverse."""
    if not isinstance(translator, ReversibleTranslator):
        name = getattr(translator, "name", type(translator).__name__)
        raise ConfigError(
            f"'{name}' cannot translate target images back to the source domain (no translate_back), which the "
            "two_way method needs; use a translator with an inverse generator (cyclegan, shape_cyclegan)"
        )
    return translator


def check_volume(volume: np.ndarray) -> np.ndarray:
    """A ``(z, H, W)`` float32 array, or a `DataError` saying what arrived instead."""
    array = np.asarray(volume)
    if array.ndim != 3:
        raise DataError(f"a translator takes (z, H, W) volumes, got an array of shape {array.shape}")
    return array.astype(np.float32, copy=False)
