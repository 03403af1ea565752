"""Translators: source domain -> target domain (MR -> synthetic CT), registered in `TRANSLATORS`.

A translator works on normalised volumes on the common grid: ``(z, H, W)`` arrays in [-1, 1] (the data layer,
`da_seg.data`, resamples and converts units before and after). Three are built in:

- ``identity``: no adaptation, the lower bound every study can include;
- ``histogram_matching``: a monotone intensity mapping fitted by quantile matching (a classical baseline);
- ``cyclegan``: the paper's step 1 (section 2.2), unpaired CycleGAN with an MSE, L1 or SSIM cycle loss.

A saved translator is a folder with ``meta.json`` (``component`` names the registered translator) and its
weights; `load_translator` reads any of them back without knowing which one it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from da_seg.errors import DataError
from da_seg.hookspecs import hookimpl
from da_seg.registry import TRANSLATORS
from da_seg.training import read_json

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


def check_volume(volume: np.ndarray) -> np.ndarray:
    """A ``(z, H, W)`` float32 array, or a `DataError` saying what arrived instead."""
    array = np.asarray(volume)
    if array.ndim != 3:
        raise DataError(f"a translator takes (z, H, W) volumes, got an array of shape {array.shape}")
    return array.astype(np.float32, copy=False)


def load_translator(directory: str | Path, device: torch.device | str = "cpu") -> Translator:
    """Load whichever registered translator wrote ``directory`` (its ``meta.json`` names the component)."""
    directory = Path(directory)
    meta: dict[str, Any] = read_json(directory / META)
    name = meta.get("component")
    if not isinstance(name, str):
        raise DataError(f"{directory / META} does not name a translator component; was it written by save()?")
    factory = TRANSLATORS.get(name)
    return factory.load(directory, device=device)


@hookimpl
def register_translators(register) -> None:
    from da_seg.translators.cyclegan import CycleGAN
    from da_seg.translators.histogram import HistogramMatching
    from da_seg.translators.identity import Identity

    register("identity", Identity)
    register("histogram_matching", HistogramMatching)
    register("cyclegan", CycleGAN)


__all__ = ["Translator", "check_volume", "load_translator"]
