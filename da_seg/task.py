"""A task: one modality pair and what the core must know about it.

Plugins register tasks (``register_tasks``); the core never names a particular anatomy or modality. A task sets the
defaults a config may override: intensity presets per domain, the common physical grid, the label names, and an
optional phantom generator that writes the documented data layout (see docs/data.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class PhantomWriter(Protocol):
    """Writes a synthetic data set in the documented layout under ``out``.

    Folders written: ``source/{images,labels}``, ``target/images``, ``evaluation/{images,labels}`` and, when asked,
    ``target_labelled/{images,labels}`` and ``paired_target/images`` (same file names as ``source``).
    """

    def __call__(
        self,
        out: Path,
        *,
        n_source: int,
        n_target: int,
        n_evaluation: int,
        n_target_labelled: int,
        paired: bool,
        seed: int,
    ) -> None: ...


@dataclass(frozen=True)
class Task:
    """A modality pair (``source`` -> ``target``) with its defaults.

    Attributes:
        name: the registered name.
        source_modality: e.g. ``"MR"``.
        target_modality: e.g. ``"CT"``.
        labels: structure names; label value ``i + 1`` is ``labels[i]`` in mask files.
        source_intensity: intensity preset table for the source domain.
        target_intensity: intensity preset table for the target domain.
        spacing: common grid, (z, y, x) in mm; both domains are resampled to it.
        size: in-plane (H, W) of the common grid (crop or pad).
        centre: where the in-plane crop is centred (`da_seg.data.Domain`): ``"grid"`` when both modalities' fields
            of view are planned on the anatomy, ``"body"`` when one is centred elsewhere (a CT on its table).
        phantom: optional synthetic-data writer.
        description: one line for ``daseg plugins``.
    """

    name: str
    source_modality: str
    target_modality: str
    labels: tuple[str, ...]
    source_intensity: dict[str, Any]
    target_intensity: dict[str, Any]
    spacing: tuple[float, float, float]
    size: tuple[int, int]
    centre: str = "grid"
    phantom: PhantomWriter | Callable[..., None] | None = None
    description: str = ""

    @property
    def classes(self) -> int:
        return len(self.labels)
