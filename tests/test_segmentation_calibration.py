"""Threshold calibration on unlabelled target images: the source labels' mean volume as the target's prior, and
per-structure thresholds in the post-processing that applies them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from da_seg.config import SegmentationConfig
from da_seg.errors import ConfigError
from da_seg.segmentation import (
    SegmenterEnsemble,
    TrainedSegmenter,
    build_segmenter,
    load_segmenter,
    match_source_volume,
    mean_volumes,
    probabilities_to_labels,
)


@dataclass
class Fixed:
    """A stand-in segmenter whose probabilities are the image itself (``(z, H, W)`` or ``(K, z, H, W)``)."""

    defaults: dict[str, Any] = field(default_factory=lambda: {"largest_component": False})
    multiclass: str = "sigmoid"

    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        return image


def _ramp(n: int = 400) -> np.ndarray:
    """n voxels with probabilities (i + 0.5) / n: exactly n * (1 - t) of them reach a threshold t on the grid."""
    return ((np.arange(n) + 0.5) / n).reshape(1, 20, n // 20)


def test_mean_volumes_counts_each_label() -> None:
    masks = [np.array([[[0, 1, 1, 2]]]), np.array([[[1, 0, 0, 0]]])]
    np.testing.assert_array_equal(mean_volumes(masks, classes=2), [1.5, 0.5])
    with pytest.raises(ConfigError, match="labelled source"):
        mean_volumes([], classes=1)


def test_threshold_where_the_mean_target_volume_meets_the_source_mean() -> None:
    images = [_ramp(), _ramp()]
    calibration = match_source_volume(Fixed(), images, np.array([100.0]))
    assert calibration.threshold == 0.75  # 400 * (1 - 0.75) = 100 voxels in each image
    assert calibration.source_volumes == [100.0]
    assert calibration.target_volumes_at_half == [200.0] and calibration.target_volumes == [100.0]
    assert match_source_volume(Fixed(), images, np.array([290.0])).threshold == 0.275  # 290 voxels


def test_ties_go_to_the_threshold_nearest_one_half() -> None:
    """Every threshold up to 0.8 keeps all of a uniform 0.8 volume: nothing to choose between them, so 0.5."""
    image = np.full((2, 4, 4), 0.8)
    assert match_source_volume(Fixed(), [image], np.array([32.0])).threshold == 0.5
    assert match_source_volume(Fixed(), [image], np.array([0.0])).threshold == 0.825


def test_each_structure_gets_its_own_threshold_and_the_labels_follow_them() -> None:
    """Structure 1 ramps over the first half of the voxels, structure 2 over the second; they never overlap."""
    ramp = _ramp().ravel()
    first = np.concatenate([ramp, np.zeros(400)]).reshape(1, 40, 20)
    second = np.concatenate([np.zeros(400), ramp]).reshape(1, 40, 20)
    image = np.stack([first, second])
    calibration = match_source_volume(Fixed(), [image], np.array([100.0, 300.0]))
    assert calibration.threshold == [0.75, 0.25]
    labels = probabilities_to_labels(image, calibration.threshold, largest_component=False)
    assert (labels == 1).sum() == 100 and (labels == 2).sum() == 300


def test_per_structure_thresholds_take_the_most_probable_eligible_structure() -> None:
    probabilities = np.array([[[[0.6, 0.6, 0.2, 0.45]]], [[[0.7, 0.4, 0.1, 0.5]]]])  # (K=2, z=1, 1, 4)
    common = probabilities_to_labels(probabilities, 0.5, largest_component=False)
    np.testing.assert_array_equal(common[0, 0], [2, 1, 0, 2])
    np.testing.assert_array_equal(probabilities_to_labels(probabilities, [0.5, 0.5], False), common)
    # structure 2 needs 0.8: voxel 0 goes to structure 1 (eligible, though less probable), voxel 3 to nothing
    per_structure = probabilities_to_labels(probabilities, [0.5, 0.8], largest_component=False)
    np.testing.assert_array_equal(per_structure[0, 0], [1, 1, 0, 0])
    # structure 1 at 0.4 takes voxel 3 (0.45) which structure 2 (0.5 < 0.8) cannot
    np.testing.assert_array_equal(probabilities_to_labels(probabilities, [0.4, 0.8], False)[0, 0], [1, 1, 0, 1])


def test_softmax_models_and_missing_target_images_are_refused() -> None:
    with pytest.raises(ConfigError, match="sigmoid"):
        match_source_volume(Fixed(multiclass="softmax"), [_ramp()], np.array([1.0]))
    with pytest.raises(ConfigError, match=r"data\.target"):
        match_source_volume(Fixed(), [], np.array([1.0]))
    with pytest.raises(ValueError, match="calibrate = 'source_volume'"):
        SegmentationConfig(calibrate="source_volume", multiclass="softmax", loss={"name": "ce"})


def test_calibrate_enters_stage_keys_only_when_set() -> None:
    """Runs from before the setting existed keep their stage keys, so --resume redoes nothing."""
    assert "calibrate" not in SegmentationConfig().stage_settings()
    assert SegmentationConfig(calibrate="source_volume").stage_settings()["calibrate"] == "source_volume"


def test_an_ensemble_loads_with_its_own_saved_threshold(tmp_path) -> None:
    """Bug: `SegmenterEnsemble.load` took its members' defaults and dropped the ensemble's, so a calibrated
    ensemble (members are saved uncalibrated) segmented at 0.5 after loading, in the run and in `daseg predict`."""
    spec = {"name": "resunet25d", "base": 4, "depth": 2}
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        network = build_segmenter(spec, context=1, classes=1).eval()
        members.append(TrainedSegmenter(network, spec=spec, context=1, defaults={"threshold": 0.5}))
    ensemble = SegmenterEnsemble(members)
    ensemble.defaults = {**ensemble.defaults, "threshold": 0.3, "largest_component": False}
    ensemble.save(tmp_path / "model")
    loaded = load_segmenter(tmp_path / "model")
    assert loaded.defaults == {"threshold": 0.3, "largest_component": False}
    image = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.segment(image), (ensemble.predict(image) >= 0.3).astype(np.uint8))
