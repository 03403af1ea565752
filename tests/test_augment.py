"""Augmentations: image and mask stay aligned, shapes and dtypes hold, the batch's device is used."""

from __future__ import annotations

import pytest
import torch

from da_seg.augment import build_augmentation
from da_seg.errors import ConfigError
from da_seg.registry import AUGMENTATIONS

SPECS = [
    [{"name": "random_ratio_crop", "min_ratio": 0.5}],
    [{"name": "rotation", "degrees": 30, "p": 1.0}],
    [{"name": "flip", "horizontal": True, "vertical": True, "p": 1.0}],
    [{"name": "centre_crop", "ratio": 0.5}],
    [{"name": "gaussian_noise", "std": 0.05, "p": 1.0}],
    [{"name": "random_ratio_crop"}, {"name": "rotation", "degrees": 20, "p": 1.0}, "flip"],
]


def _shape_batch(device: torch.device, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """An off-centre L-shaped object (+1 on -1 background) and its mask; asymmetric so flips would show."""
    image = -torch.ones(6, channels, 32, 48, device=device)
    mask = torch.zeros(6, 1, 32, 48, dtype=torch.uint8, device=device)
    for t in (image, mask):
        t[:, :, 6:22, 10:18] = 1
        t[:, :, 16:22, 18:34] = 1
    return image, mask


def test_registered() -> None:
    assert {"random_ratio_crop", "rotation", "flip", "centre_crop", "gaussian_noise"} <= set(AUGMENTATIONS.names())


@pytest.mark.parametrize("specs", SPECS, ids=lambda s: "+".join(x if isinstance(x, str) else x["name"] for x in s))
def test_mask_stays_on_the_drawn_shape(specs, device) -> None:
    torch.manual_seed(0)
    image, mask = _shape_batch(device, channels=3)
    out, out_mask = build_augmentation(specs)(image, mask)
    assert out.shape == image.shape and out_mask.shape == mask.shape
    assert out.device == image.device and out_mask.device == mask.device
    assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {0, 1}
    assert out_mask.sum() > 0
    # The mask covers the object's pixels: nearly all mask pixels are bright, nearly all others dark (bilinear
    # resampling blurs only the one-pixel rim). Every channel moved with the same geometry.
    inside = out[:, 0][out_mask[:, 0] == 1]
    outside = out[:, 0][out_mask[:, 0] == 0]
    assert (inside > 0).float().mean() > 0.97
    assert (outside < 0).float().mean() > 0.97
    tol = 0.5 if "gaussian_noise" in str(specs) else 1e-6  # noise is drawn per pixel and channel
    assert (out[:, 1:] - out[:, :1]).abs().max() < tol


def test_flip_moves_the_shape() -> None:
    image, mask = _shape_batch(torch.device("cpu"))
    out, out_mask = build_augmentation([{"name": "flip", "p": 1.0}])(image, mask)
    assert torch.equal(out_mask, mask.flip(-1)) and torch.equal(out, image.flip(-1))


def test_centre_crop_zooms_by_two() -> None:
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    mask[:, :, 12:20, 12:20] = 1  # 8x8 at the centre becomes 16x16 after a 50% centre crop resized back
    _, out_mask = build_augmentation([{"name": "centre_crop", "ratio": 0.5}])(mask.float() * 2 - 1, mask)
    assert out_mask.sum().item() == 16 * 16
    assert out_mask[0, 0, 8:24, 8:24].all()


def test_outside_pixels_take_the_background_value() -> None:
    image = torch.ones(2, 1, 32, 32)  # rotating a bright square by 45 degrees brings in corners from outside
    out, _ = build_augmentation([{"name": "rotation", "degrees": [45, 45], "p": 1.0}])(image)
    assert out.min().item() == pytest.approx(-1.0)
    assert out[:, :, 16, 16].min().item() == pytest.approx(1.0)


def test_empty_is_identity_and_masks_optional() -> None:
    image, _ = _shape_batch(torch.device("cpu"))
    out, out_mask = build_augmentation([])(image, None)
    assert out is image and out_mask is None
    out, out_mask = build_augmentation(["rotation"])(image)
    assert out.shape == image.shape and out_mask is None


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean"):
        build_augmentation([{"name": "rotaton"}])


@pytest.mark.parametrize("specs", SPECS, ids=lambda s: "+".join(x if isinstance(x, str) else x["name"] for x in s))
def test_images_without_masks_get_the_same_transform(specs) -> None:
    """Translator batches have no mask: nothing extra is warped, and the images move exactly as with a mask."""
    image, mask = _shape_batch(torch.device("cpu"))
    augment = build_augmentation(specs)
    torch.manual_seed(1)
    with_mask, _ = augment(image, mask)
    torch.manual_seed(1)
    alone, none = augment(image, None)
    assert none is None
    torch.testing.assert_close(alone, with_mask)
