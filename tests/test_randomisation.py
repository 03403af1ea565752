"""Random intensity remapping (GIN, Bezier): ranges kept, masks untouched, one remapping per 2.5D stack."""

from __future__ import annotations

import pytest
import torch

from da_seg.augment import build_augmentation
from da_seg.errors import ConfigError
from da_seg.randomisation import bezier_curve, random_shallow_conv
from da_seg.registry import AUGMENTATIONS


def _stack(batch: int = 4, channels: int = 3, size: int = 12) -> torch.Tensor:
    base = torch.rand(batch, 1, size, size) * 2 - 1
    return base.repeat(1, channels, 1, 1)  # identical slices: a stack that must stay identical


def _ranges(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return torch.stack([flat.min(1).values, flat.max(1).values], 1)


def test_registered_as_augmentations() -> None:
    assert {"gin", "bezier"} <= set(AUGMENTATIONS.names())


@pytest.mark.parametrize("remap", [random_shallow_conv, bezier_curve])
def test_each_image_keeps_its_range_and_its_stack_one_mapping(remap) -> None:
    torch.manual_seed(0)
    x = _stack()
    y = remap(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(_ranges(y), _ranges(x), atol=1e-5)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    assert (y - x).abs().mean() > 0.01


def test_a_one_layer_pointwise_gin_is_the_image_or_its_negative() -> None:
    # one 1x1 layer is w * x + b: after blending and rescaling, the image itself (w > 0) or its inversion (w < 0)
    torch.manual_seed(1)
    x = torch.rand(8, 1, 6, 6)
    y = random_shallow_conv(x, layers=1, width=1, kernel_sizes=(1,))
    low, high = _ranges(x).unbind(1)
    inverted = low.view(-1, 1, 1, 1) + high.view(-1, 1, 1, 1) - x
    same = [torch.allclose(y[i], x[i], atol=1e-5) or torch.allclose(y[i], inverted[i], atol=1e-5) for i in range(8)]
    assert all(same)


def test_bezier_is_monotone_unless_inverted() -> None:
    torch.manual_seed(2)
    x = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(6, 1, 1, 1)
    rising = bezier_curve(x, invert_p=0.0).flatten(1)
    falling = bezier_curve(x, invert_p=1.0).flatten(1)
    assert (rising.diff(dim=1) >= -1e-6).all()
    assert (falling.diff(dim=1) <= 1e-6).all()


def test_masks_pass_through_and_seeds_repeat() -> None:
    aug = build_augmentation([{"name": "gin", "p": 1.0}, {"name": "bezier", "p": 1.0}])
    x = _stack(2, 3, 16)
    masks = (torch.rand(2, 1, 16, 16) > 0.5).to(torch.uint8)
    torch.manual_seed(3)
    y, m = aug(x, masks)
    torch.manual_seed(3)
    y2, _ = aug(x, masks)
    assert torch.equal(m, masks) and torch.equal(y, y2)


@pytest.mark.parametrize(
    "spec", [{"name": "gin", "layers": 0}, {"name": "gin", "kernel_sizes": [2]}, {"name": "bezier", "invert_p": 2}]
)
def test_bad_settings_are_config_errors(spec) -> None:
    with pytest.raises(ConfigError):
        build_augmentation([spec]).modules((8, 8))
