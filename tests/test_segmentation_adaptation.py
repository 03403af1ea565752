"""AdaBN: a trained segmenter's batch-norm statistics re-estimated on unlabelled target images."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from da_seg.errors import ConfigError, DataError
from da_seg.segmentation import TrainedSegmenter, adapt_batch_norm, build_segmenter


def _conv_bn(seed: int = 0) -> TrainedSegmenter:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1))
    return TrainedSegmenter(model=model, spec={"name": "test"}, context=1)


def _volume(seed: int, z: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (z, 8, 8)).astype(np.float32)


def test_statistics_are_those_of_the_target_slices_and_augment_sees_them() -> None:
    segmenter = replace(_conv_bn(), batch_size=32)  # all 12 slices in one batch
    images = [_volume(1), _volume(2)]
    seen = []

    def augment(x: torch.Tensor) -> tuple[torch.Tensor, None]:
        seen.append(x.shape)
        return x * 2, None

    adapted = adapt_batch_norm(segmenter, images, augment=augment)
    stacks = np.concatenate([v[np.clip(np.arange(6)[:, None] + [-1, 0, 1], 0, 5)] for v in images])
    with torch.no_grad():
        out = segmenter.model[0](torch.as_tensor(stacks) * 2)
    norm = adapted.model[1]
    torch.testing.assert_close(norm.running_mean, out.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var, out.var(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert seen == [(12, 3, 8, 8)]
    assert adapted.info["adapted_batch_norm"] == 2


def test_adaptation_undoes_a_constant_shift_of_the_target_and_leaves_the_original_alone() -> None:
    segmenter = _conv_bn()
    before = {k: v.clone() for k, v in segmenter.model.state_dict().items()}
    source = [_volume(3), _volume(4)]
    on_source = adapt_batch_norm(segmenter, source)
    on_target = adapt_batch_norm(segmenter, [v + 0.7 for v in source])  # same anatomy, brighter
    expected = on_source.predict(source[0])
    torch.testing.assert_close(torch.as_tensor(on_target.predict(source[0] + 0.7)), torch.as_tensor(expected))
    assert not np.allclose(segmenter.predict(source[0] + 0.7), expected, atol=1e-3)  # unadapted: off
    for k, v in segmenter.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert segmenter.model[1].momentum == 0.1 and on_target.model[1].momentum == 0.1


def test_a_network_without_batch_norm_or_without_images_is_refused() -> None:
    spec = {"name": "resunet25d", "base": 4, "depth": 2, "norm": "instance"}
    instance = TrainedSegmenter(model=build_segmenter(spec, 1), spec=spec, context=0)
    with pytest.raises(ConfigError, match="no batch-norm"):
        adapt_batch_norm(instance, [_volume(0)])
    with pytest.raises(DataError, match="at least one"):
        adapt_batch_norm(_conv_bn(), [])
    with pytest.raises(DataError, match=r"\(z, H, W\)"):
        adapt_batch_norm(_conv_bn(), [np.zeros((8, 8), np.float32)])
