"""Augmentations: image and mask stay aligned, shapes and dtypes hold, the batch's device is used."""

from __future__ import annotations

import kornia.augmentation as K
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
    # the same through kornia's pipeline: a kornia augmentation (idle here) takes the list off the fused path
    [{"name": "random_ratio_crop"}, {"name": "rotation", "degrees": 20, "p": 1.0}, "flip", {"name": "gin", "p": 0.0}],
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


@pytest.mark.parametrize(("vertical", "dims"), [(False, (-1,)), (True, (-2, -1))])
def test_flip_moves_the_shape(vertical, dims) -> None:
    """Masks flip exactly; images to float32 rounding of kornia's sampling grid (the fused path warps, not slices)."""
    image, mask = _shape_batch(torch.device("cpu"))
    out, out_mask = build_augmentation([{"name": "flip", "vertical": vertical, "p": 1.0}])(image, mask)
    assert torch.equal(out_mask, mask.flip(dims))
    torch.testing.assert_close(out, image.flip(dims), atol=1e-4, rtol=0)


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


# -- the fused path: one draw, one matrix, one warp -------------------------------------------------------------------

EXAMPLE = [{"name": "random_ratio_crop", "min_ratio": 0.5}, {"name": "rotation", "degrees": 10.0}, {"name": "flip"}]


@pytest.fixture
def rotation_plugin():
    """A plugin's own ``rotation`` overrides ours for one test; ours is put back after."""
    ours = AUGMENTATIONS.entry("rotation")
    AUGMENTATIONS.register("rotation", lambda degrees=10.0, p=0.5: K.RandomRotation(degrees, p=p), override=True)
    yield
    AUGMENTATIONS.register("rotation", ours.factory, override=True, plugin=ours.plugin)


def _coordinates(n: int, size: int = 33) -> torch.Tensor:
    """``(n, 2, size, size)``: each pixel holds its own x and y, so an output pixel shows where it was sampled."""
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([x, y]).expand(n, 2, size, size).contiguous()


def _sampled_from(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map ``source = A @ output + b`` read off a warped `_coordinates` image around its centre.

    Shape:
        ``(n, 2, S, S)`` -> A ``(n, 2, 2)``, b ``(n, 2)``.
    """
    c = out.shape[-1] // 2
    centre = out[:, :, c, c]
    a = torch.stack([out[:, :, c, c + 1] - centre, out[:, :, c + 1, c] - centre], dim=-1)
    return a, centre - a.sum(-1) * c


def test_fused_for_built_in_specs_only() -> None:
    assert build_augmentation([*EXAMPLE, {"name": "centre_crop"}, "gaussian_noise"]).fused
    assert not build_augmentation([]).fused
    assert not build_augmentation(["flip", "gin"]).fused  # a registered kornia augmentation
    assert not build_augmentation(["gaussian_noise", "flip"]).fused  # intensity before geometry: kornia's order


def test_a_plugin_override_takes_the_kornia_path(rotation_plugin) -> None:
    overridden = build_augmentation(["rotation", "flip"])
    assert not overridden.fused
    assert overridden(torch.zeros(2, 1, 8, 8))[0].shape == (2, 1, 8, 8)


def test_equal_specs_are_equal_augmentations() -> None:
    assert build_augmentation(EXAMPLE) == build_augmentation([dict(s) for s in EXAMPLE])
    assert build_augmentation(EXAMPLE).specs == build_augmentation(EXAMPLE).specs
    assert build_augmentation(EXAMPLE) != build_augmentation(EXAMPLE[:2])
    assert build_augmentation(EXAMPLE) != build_augmentation(EXAMPLE, fill=0.0)


def test_idle_specs_are_the_identity() -> None:
    image, mask = _shape_batch(torch.device("cpu"))
    idle = [{"name": n, "p": 0.0} for n in ("random_ratio_crop", "rotation", "flip", "gaussian_noise")]
    augment = build_augmentation(idle)
    assert augment.fused
    out, out_mask = augment(image, mask)
    assert torch.equal(out, image) and torch.equal(out_mask, mask)
    square, square_mask = image[..., :32], mask[..., :32]
    out, out_mask = augment(square, square_mask, crop=32)  # a window as large as the image: the identity too
    assert torch.equal(out, square) and torch.equal(out_mask, square_mask)


@pytest.mark.parametrize("turn", [90, -90])
def test_quarter_turn_is_rot90(turn) -> None:
    """Positive degrees turn counter-clockwise as displayed (``torch.rot90(k=1)``), as kornia's RandomRotation does."""
    torch.manual_seed(0)
    image = torch.randn(2, 3, 16, 16)
    mask = (torch.rand(2, 1, 16, 16) * 4).to(torch.uint8)
    augment = build_augmentation([{"name": "rotation", "degrees": (turn, turn), "p": 1.0}])
    out, out_mask = augment(image, mask)
    k = turn // 90
    assert torch.equal(out_mask, mask.rot90(k, dims=(-2, -1)))
    torch.testing.assert_close(out, image.rot90(k, dims=(-2, -1)), atol=1e-4, rtol=0)
    kornia_path = K.AugmentationSequential(*augment.modules((16, 16)))
    torch.testing.assert_close(kornia_path(image), out, atol=1e-4, rtol=0)


def test_crop_gives_windows_padded_with_fill() -> None:
    image, mask = -torch.ones(4, 1, 8, 8), torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    image[:, :, 2:6, 2:6], mask[:, :, 2:6, 2:6] = 1, 3
    for specs in (
        [],
        [{"name": "flip", "p": 1.0}],
        [{"name": "gin", "p": 0.0}],
    ):  # kornia's RandomCrop, the fused warp, kornia again
        out, out_mask = build_augmentation(specs, fill=-2.0)(image, mask, crop=12)
        assert out.shape == (4, 1, 12, 12) and out_mask.shape == (4, 1, 12, 12) and out_mask.dtype == torch.uint8
        assert set(out_mask.unique().tolist()) == {0, 3} and (out_mask == 3).sum() == 4 * 16
        inside = out[(out > -2 + 1e-4)]
        assert inside.numel() == 4 * 64, specs  # the whole 8x8 image, the rest is fill
        assert (out[out_mask == 3] > 0.99).all()
        out, none = build_augmentation(specs)(image, None, crop=5)
        assert out.shape == (4, 1, 5, 5) and none is None


def test_crop_as_large_as_the_image_without_ops_is_exact() -> None:
    image = torch.randn(3, 2, 16, 16)
    out, _ = build_augmentation([])(image, crop=16)
    assert torch.equal(out, image)


@pytest.mark.parametrize(("size", "offsets"), [(33, range(0, 34 - 24)), (20, range(-4, 1))])
def test_crop_offset_is_uniform_and_folded_into_the_warp(size, offsets) -> None:
    torch.manual_seed(0)
    out, _ = build_augmentation([{"name": "flip", "p": 0.0}])(_coordinates(2000, size), crop=24)
    a, b = _sampled_from(out)
    torch.testing.assert_close(a, torch.eye(2).expand(2000, 2, 2), atol=1e-3, rtol=0)
    drawn = b.round()
    assert torch.allclose(b, drawn, atol=1e-3)
    counts = torch.stack([(drawn == o).sum(0) for o in offsets])  # (offsets, axes)
    assert counts.sum(0).tolist() == [2000, 2000]
    assert (counts / 2000 - 1 / len(offsets)).abs().max() < 0.04


def test_fused_parameters_follow_the_specs() -> None:
    """Over 2000 tiny images: flips with frequency p; angles uniform in ±degrees; crop sides in [min, max] ratio."""
    torch.manual_seed(0)
    n, size = 2000, 33
    flips, _ = build_augmentation([{"name": "flip", "p": 0.3}])(_coordinates(n, size))
    a, _ = _sampled_from(flips)
    assert abs((a[:, 0, 0] < 0).float().mean().item() - 0.3) < 0.04
    turns, _ = build_augmentation([{"name": "rotation", "degrees": 10.0, "p": 0.5}])(_coordinates(n, size))
    a, _ = _sampled_from(turns)
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    turned = angle[angle.abs() > 1e-3]
    assert abs(len(turned) / n - 0.5) < 0.04 and turned.abs().max() <= 10.0 + 1e-3
    assert abs(turned.mean().item()) < 0.5 and abs(turned.std().item() - 20 / 12**0.5) < 0.4
    crops, _ = build_augmentation([{"name": "random_ratio_crop", "min_ratio": 0.5}])(_coordinates(n, size))
    a, b = _sampled_from(crops)
    side = a[:, 0, 0] * (size - 1) + 1  # the crop's width in pixels
    torch.testing.assert_close(a[:, 1, 1], a[:, 0, 0])  # the image's aspect ratio
    assert side.min() >= round(0.5 * size) - 1e-3 and side.max() <= size + 1e-3
    assert abs(((side / size) ** 2).mean().item() - (0.25 + 1) / 2) < 0.02  # area fraction ~ U(0.25, 1)
    assert torch.allclose(b, b.round(), atol=1e-3) and (b >= -1e-3).all() and (b <= size - side[:, None] + 1e-3).all()


def test_fused_noise_is_per_image() -> None:
    torch.manual_seed(0)
    out, _ = build_augmentation([{"name": "gaussian_noise", "std": 0.1, "p": 0.5}])(torch.zeros(2000, 1, 8, 8))
    noisy = out.flatten(1).std(1) > 0
    assert abs(noisy.float().mean().item() - 0.5) < 0.04
    assert abs(out[noisy].std().item() - 0.1) < 0.005


def test_fused_call_traces_as_one_graph() -> None:
    augment = build_augmentation([*EXAMPLE, {"name": "centre_crop"}, {"name": "gaussian_noise"}])
    compiled = torch.compile(augment, fullgraph=True, backend="eager")  # fails on .item() or a data-dependent branch
    out, out_mask = compiled(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16, dtype=torch.uint8), crop=12)
    assert out.shape == (2, 1, 12, 12) and out_mask.dtype == torch.uint8


def _aten_ops(call) -> int:
    call()  # warm: pipelines and caches are built on the first call
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        call()
    return sum(e.name.startswith("aten::") for e in prof.events())


def test_fused_call_dispatches_far_fewer_ops() -> None:
    """The example spec on (4, 1, 64, 64) with masks: ~2700 aten ops through kornia's pipeline (~3300 with the
    caller's RandomCrop after it); fused, 1098 (1145 with crop=48), nearly all inside kornia's get_affine_matrix2d
    and two warp_affine calls. Counted with nested ops, as torch.profiler lists them."""
    images, masks = torch.zeros(4, 1, 64, 64), torch.zeros(4, 1, 64, 64, dtype=torch.uint8)
    augment = build_augmentation(EXAMPLE)
    assert _aten_ops(lambda: augment(images, masks)) < 1300
    assert _aten_ops(lambda: augment(images, masks, crop=48)) < 1350
