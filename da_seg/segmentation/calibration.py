"""Threshold calibration on unlabelled target images (ours): the source labels' mean structure volume as a prior.

Why: a segmenter trained on SynCT draws the real CT's organ too small or too large as a whole (on the prostate
phantom the SynCT segmenters predicted 0.66-1.34 of the source labels' mean volume at threshold 0.5, the oracle
1.02-1.08; benchmarks/RESULTS.md), and a threshold of 0.5 cannot see that. Without target labels the one thing known
about the target organ's size is the labelled source's: `match_source_volume` chooses, per structure, the threshold
at which the model's mean predicted volume over the unlabelled target images (after its post-processing) is closest
to the source labels' mean. It assumes both cohorts' organs are of similar size on average; where they are not
(another population, another age), leave ``segmentation.calibrate = "none"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from da_seg.errors import ConfigError
from da_seg.segmentation.inference import Segmenter
from da_seg.segmentation.postprocess import probabilities_to_labels

THRESHOLDS = np.round(np.linspace(0.05, 0.95, 37), 3)  # steps of 0.025


def mean_volumes(masks: Sequence[np.ndarray], classes: int) -> np.ndarray:
    """Mean voxel count of each label 1..classes over ``masks`` (on one grid, so counts compare as volumes)."""
    if not masks:
        raise ConfigError("threshold calibration needs labelled source cases; there are none")
    return np.array([np.mean([(m == k).sum() for m in masks]) for k in range(1, classes + 1)], dtype=np.float64)


@dataclass
class Calibration:
    """What `match_source_volume` chose and why: per-structure thresholds (a float for a binary model), the source
    labels' mean volumes, and the model's mean target volumes at 0.5 and at the chosen thresholds (voxels)."""

    threshold: float | list[float]
    source_volumes: list[float]
    target_volumes_at_half: list[float]
    target_volumes: list[float]


def match_source_volume(model: Segmenter, images: Sequence[np.ndarray], source_volumes: np.ndarray) -> Calibration:
    """Per-structure thresholds at which ``model``'s mean predicted volume on ``images`` is closest to
    ``source_volumes`` (`mean_volumes`); ties go to the threshold nearest 0.5.

    Structures are calibrated one after another, each with the others at their thresholds so far (they compete for
    voxels through the argmax). The model's own post-processing (component rule, TTA) applies as in `segment`.
    """
    if model.multiclass == "softmax":
        raise ConfigError("segmentation.calibrate needs multiclass = 'sigmoid' (a softmax model has no threshold)")
    if not images:
        raise ConfigError("threshold calibration needs unlabelled target images (data.target); there are none")
    defaults = model.defaults
    probabilities = [model.predict(image, tta_flip=defaults.get("tta_flip", False)) for image in images]
    lcc, rule = defaults.get("largest_component", True), defaults.get("component_rule", "largest")

    def volumes(levels: np.ndarray) -> np.ndarray:
        labels = [probabilities_to_labels(p, levels, lcc, False, rule) for p in probabilities]
        return np.array([np.mean([(lab == k).sum() for lab in labels]) for k in range(1, len(levels) + 1)])

    levels = np.full(len(source_volumes), 0.5)
    at_half = volumes(levels)
    candidates = THRESHOLDS[np.argsort(np.abs(THRESHOLDS - 0.5), kind="stable")]  # nearest 0.5 first: ties go there
    for k, wanted in enumerate(source_volumes):
        misses = []
        for t in candidates:
            levels[k] = t
            misses.append(abs(volumes(levels)[k] - wanted))
        levels[k] = candidates[int(np.argmin(misses))]
    threshold = float(levels[0]) if len(levels) == 1 else [float(t) for t in levels]
    return Calibration(threshold, [float(v) for v in source_volumes], at_half.tolist(), volumes(levels).tolist())
