"""Augmentations built on kornia.augmentation, registered in `AUGMENTATIONS`, composed by `build_augmentation`.

Each registered factory returns one ``kornia.augmentation`` module or a list of them. Factories whose geometry depends
on the image size (crops resized back) take a ``size=(H, W)`` argument that `build_augmentation` fills in from the
batch, so a config names only what a user chooses::

    source_augment = [{name = "random_ratio_crop", min_ratio = 0.5}, {name = "rotation", degrees = 10}, "flip"]
    target_augment = [{name = "centre_crop", ratio = 0.5}]

The composition is ``kornia.augmentation.AugmentationSequential(..., data_keys=["input", "mask"])``: geometric ops
move the mask with the image (nearest resampling), intensity ops leave it alone, and everything runs on the batch's
device. The paper (sections 3 and 4) augments the CycleGAN's data with random crops of ratio 1 to 0.5 (read here as
the side ratio; the crop is resized back), rotation and flipping, after cropping CT by 50% around the centre to
remove air and the table; it names neither the rotation angle nor the flip axis.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import kornia.augmentation as K
from torch import Tensor, nn

from da_seg.errors import ConfigError
from da_seg.hookspecs import hookimpl
from da_seg.registry import AUGMENTATIONS

Size = tuple[int, int]
AugmentSpec = str | Mapping[str, Any]


def random_ratio_crop(size: Size, min_ratio: float = 0.5, max_ratio: float = 1.0, p: float = 1.0) -> nn.Module:
    """Crop a random region with the image's aspect ratio and resize it back to ``size`` (the paper's random crop).

    The crop's area fraction is drawn uniformly from ``[min_ratio², max_ratio²]`` (kornia's ``scale``), so each
    side is ``sqrt(area fraction)`` of the image side, in ``[min_ratio, max_ratio]``; the position is uniform.
    """
    if not 0 < min_ratio <= max_ratio <= 1:
        raise ConfigError(f"need 0 < min_ratio <= max_ratio <= 1, got {min_ratio}, {max_ratio}")
    aspect = size[1] / size[0]
    return K.RandomResizedCrop(
        size=tuple(size), scale=(min_ratio**2, max_ratio**2), ratio=(aspect, aspect), p=p, cropping_mode="resample"
    )


def rotation(degrees: float | tuple[float, float] = 10.0, p: float = 0.5) -> nn.Module:
    """Rotate by an angle uniform in ``[-degrees, degrees]`` (or in ``[low, high]`` for a pair) about the centre."""
    return K.RandomRotation(degrees=degrees, p=p)


def flip(horizontal: bool = True, vertical: bool = False, p: float = 0.5) -> list[nn.Module]:
    """Left-right and/or up-down flips, each applied with probability ``p``.

    A left-right flip swaps left and right: leave it out for lateralised structures (left/right organs, heart
    chambers), e.g. ``segmentation.augment`` without ``flip`` (docs/config.md).
    """
    ops: list[nn.Module] = []
    if horizontal:
        ops.append(K.RandomHorizontalFlip(p=p))
    if vertical:
        ops.append(K.RandomVerticalFlip(p=p))
    return ops


def centre_crop(size: Size, ratio: float = 0.5) -> list[nn.Module]:
    """Keep the central ``ratio`` of each side and resize back to ``size`` (the paper crops CT by 50%)."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"centre_crop ratio must be in (0, 1], got {ratio}")
    crop = (max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio)))
    return [K.CenterCrop(size=crop), K.Resize(size=tuple(size))]


def gaussian_noise(std: float = 0.02, p: float = 0.5) -> nn.Module:
    """Additive Gaussian noise on the image only (an intensity op: masks are untouched)."""
    return K.RandomGaussianNoise(mean=0.0, std=std, p=p)


class Augmentation:
    """A composed augmentation: ``aug(images, masks) -> (images, masks)`` on the batch's device.

    Built by `build_augmentation`. The kornia pipeline is built once per image size (size-dependent factories get
    ``size``). Images are shifted by ``-fill`` while transformed so that pixels rotated or cropped in from outside
    take the value ``fill`` (-1, the background of normalised images) instead of kornia's zero.

    Shape:
        images ``(B, C, H, W)`` float; masks ``(B, 1, H, W)`` integer labels or None. Outputs keep shapes and dtypes.
    """

    def __init__(self, specs: Sequence[AugmentSpec], fill: float = -1.0) -> None:
        self.specs = [{"name": s} if isinstance(s, str) else dict(s) for s in specs]
        for spec in self.specs:
            AUGMENTATIONS.get(spec.get("name", ""))  # fail early on an unknown name, with close matches
        self.fill = fill
        self._pipelines: dict[tuple[int, int, bool], K.AugmentationSequential] = {}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def __repr__(self) -> str:
        return f"Augmentation({self.specs})"

    def modules(self, size: Size) -> list[nn.Module]:
        """The kornia modules for images of ``size``, in order."""
        ops: list[nn.Module] = []
        for spec in self.specs:
            name = spec["name"]
            accepts_size = "size" in inspect.signature(AUGMENTATIONS.get(name)).parameters
            built = AUGMENTATIONS.build(spec, size=tuple(size)) if accepts_size else AUGMENTATIONS.build(spec)
            ops.extend(built if isinstance(built, (list, tuple)) else [built])
        return ops

    def _pipeline(self, size: Size, with_mask: bool) -> K.AugmentationSequential:
        key = (*size, with_mask)
        if key not in self._pipelines:
            keys = ["input", "mask"] if with_mask else ["input"]
            self._pipelines[key] = K.AugmentationSequential(*self.modules(size), data_keys=keys)
        return self._pipelines[key]

    def __call__(self, images: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if not self.specs:
            return images, masks
        pipe = self._pipeline((int(images.shape[-2]), int(images.shape[-1])), masks is not None)
        dtype = images.dtype
        x = images.float() - self.fill
        if masks is None:  # translator batches: no mask to warp
            return (pipe(x) + self.fill).to(dtype), None
        x, m = pipe(x, masks.float())
        return (x + self.fill).to(dtype), m.round().to(masks.dtype)


def build_augmentation(specs: Sequence[AugmentSpec] | None, *, fill: float = -1.0) -> Augmentation:
    """Compose registered augmentations from config specs (``{"name": ..., **kwargs}`` or a bare name).

    An empty list (or None) gives the identity. The result is called as ``aug(images, masks)`` with masks optional.

    Example:
        >>> aug = build_augmentation([{"name": "rotation", "degrees": 10}, {"name": "flip", "p": 0.5}])
        >>> images, masks = aug(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    """
    return Augmentation(list(specs or []), fill=fill)


@hookimpl
def register_augmentations(register) -> None:
    register("random_ratio_crop", random_ratio_crop)
    register("rotation", rotation)
    register("flip", flip)
    register("centre_crop", centre_crop)
    register("gaussian_noise", gaussian_noise)
