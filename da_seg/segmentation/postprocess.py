"""Post-processing: per-structure probabilities -> a label map (threshold or argmax, then one connected component
per structure, chosen by a rule)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from da_seg.errors import ConfigError


def largest_components(labels: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
    """Keep one 26-connected 3D component of each label (removes isolated false positives): the largest, or with
    ``probabilities`` (as `probabilities_to_labels` takes them) the one with the highest mean probability.

    The second rule is ours (``segmentation.component_rule = "most_confident"``): on the prostate phantom a
    SynCT-trained network sometimes marks a larger false region beside the organ with less confidence, and keeping
    the largest then throws the organ away (Dice 0; benchmarks/RESULTS.md).
    """
    out = np.zeros_like(labels)
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for value in np.unique(labels):
        if value == 0:
            continue
        components, n = ndimage.label(labels == value, structure=structure)
        if n == 0:
            continue
        if probabilities is None:
            scores = np.bincount(components.ravel())[1:]
        else:
            prob = probabilities if probabilities.ndim == labels.ndim else probabilities[value - 1]
            scores = ndimage.mean(prob, components, np.arange(1, n + 1))
        out[components == int(np.argmax(scores)) + 1] = value
    return out


COMPONENT_RULES = ("largest", "most_confident")


def probabilities_to_labels(
    probabilities: np.ndarray,
    threshold: float | Sequence[float] = 0.5,
    largest_component: bool = True,
    softmax: bool = False,
    component_rule: str = "largest",
) -> np.ndarray:
    """``(z, H, W)`` foreground or ``(K, z, H, W)`` per-structure probabilities -> ``(z, H, W)`` uint8 labels.

    ``softmax``: the probabilities are a softmax's structure channels; the background is what they leave
    (``1 - sum``) and each voxel takes the argmax class, without a threshold. ``largest_component`` keeps one
    component per label, chosen by ``component_rule`` (`COMPONENT_RULES`, `largest_components`). ``threshold`` is
    one probability for every structure or one per structure (a calibrated model's, `match_source_volume`): a voxel
    takes the most probable of the structures whose probability reaches their own threshold.
    """
    if component_rule not in COMPONENT_RULES:
        raise ConfigError(f"component_rule '{component_rule}' is not one of {', '.join(COMPONENT_RULES)}")
    if softmax:
        structures = probabilities[None] if probabilities.ndim == 3 else probabilities
        background = 1.0 - structures.sum(0, keepdims=True)
        labels = np.concatenate([background, structures]).argmax(0).astype(np.uint8)
    elif probabilities.ndim == 3:
        labels = (probabilities >= np.ravel(threshold)[0]).astype(np.uint8)
    else:
        levels = np.broadcast_to(np.asarray(threshold, dtype=np.float64), probabilities.shape[:1])
        eligible = np.where(probabilities >= levels[:, None, None, None], probabilities, -1.0)
        labels = np.where(eligible.max(0) >= 0, eligible.argmax(0) + 1, 0).astype(np.uint8)
    if not largest_component:
        return labels
    return largest_components(labels, probabilities if component_rule == "most_confident" else None)
