"""Random intensity remapping: single-source domain generalisation, a way to segment CT without seeing any CT.

A segmenter trained on source images whose intensities are remapped at random each step cannot rely on the source
modality's contrast and has to learn shape and texture that survive a change of modality. Two remappings are
registered as augmentations (kornia intensity ops: masks are untouched):

- ``gin``: global intensity non-linear augmentation (GIN; Ouyang et al. 2022, "Causality-inspired single-source
  domain generalization for medical image segmentation"): a freshly drawn shallow random convolutional network per
  image, blended with the image by a random weight;
- ``bezier``: a random monotone cubic Bezier curve applied to the intensities (the non-linear transformation of
  Zhou et al. 2019, Models Genesis), inverted with probability ``invert_p`` (ours: CT and MR disagree in the order
  of tissue brightness, which no monotone curve can reach).

Both work on each image's own range: it is mapped to [0, 1], remapped, and mapped back, so the augmented images
keep the range the segmenter expects (ours: GIN's paper rescales by the Frobenius norm instead). A 2.5D stack gets
one remapping for all its slices, as a modality change would. The pipeline's ``domain_randomisation`` baseline adds
``segmentation.randomise`` (default ``[gin, bezier]``, each half the time) to the segmenter's augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from kornia.augmentation import IntensityAugmentationBase2D
from torch import Tensor

from da_seg.errors import ConfigError
from da_seg.hookspecs import hookimpl


def _unit_range(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` mapped to [0, 1] per image, with the per-image minimum and span to map it back."""
    flat = x.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-6)
    return (x - low) / span, low, span


def random_shallow_conv(x: Tensor, layers: int = 4, width: int = 2, kernel_sizes: Sequence[int] = (1, 3)) -> Tensor:
    """GIN: ``alpha * net(x) + (1 - alpha) * x`` with a random ``layers``-deep conv net and ``alpha`` ~ U(0, 1) per
    image; weights and biases ~ N(0, 1), LeakyReLU(0.2) between layers, the result rescaled to the image's range.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``; every channel of an image goes through the same net.
    """
    b, c, h, w = x.shape
    unit, low, span = _unit_range(x.float())
    y = unit.reshape(1, b * c, h, w)  # one conv group per (image, channel); an image's channels share weights
    for i in range(layers):
        fan_in, fan_out = (1 if i == 0 else width), (1 if i == layers - 1 else width)
        k = int(kernel_sizes[int(torch.randint(len(kernel_sizes), ()))])
        weight = torch.randn(b, fan_out, fan_in, k, k, device=x.device).repeat_interleave(c, dim=0)
        bias = torch.randn(b, fan_out, device=x.device).repeat_interleave(c, dim=0)
        y = F.conv2d(y, weight.flatten(0, 1), bias.flatten(), padding=k // 2, groups=b * c)
        if i < layers - 1:
            y = F.leaky_relu(y, 0.2)
    net, _, _ = _unit_range(y.reshape(b, c, h, w))
    alpha = torch.rand(b, 1, 1, 1, device=x.device)
    mixed, _, _ = _unit_range(alpha * net + (1 - alpha) * unit)
    return (mixed * span + low).to(x.dtype)


def bezier_curve(x: Tensor, invert_p: float = 0.5, points: int = 256) -> Tensor:
    """Each image's intensities through a random monotone cubic Bezier curve from (0, 0) to (1, 1) (control points
    uniform in the unit square), inverted with probability ``invert_p``; the result keeps the image's range.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    b = x.shape[0]
    unit, low, span = _unit_range(x.float())
    t = torch.linspace(0, 1, points, device=x.device)
    basis = torch.stack([3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # P0 = (0, 0) contributes nothing
    control = torch.rand(b, 2, 2, device=x.device)  # (image, point P1/P2, coordinate x/y)
    curve_x = (control[:, :, 0] @ basis[:2] + basis[2]).sort(dim=1).values
    curve_y = (control[:, :, 1] @ basis[:2] + basis[2]).sort(dim=1).values
    values = unit.reshape(b, -1).contiguous()
    right = torch.searchsorted(curve_x.contiguous(), values).clamp(1, points - 1)
    x0, x1 = curve_x.gather(1, right - 1), curve_x.gather(1, right)
    y0, y1 = curve_y.gather(1, right - 1), curve_y.gather(1, right)
    mapped = y0 + (values - x0) / (x1 - x0).clamp_min(1e-6) * (y1 - y0)
    invert = (torch.rand(b, 1, device=x.device) < invert_p).float()
    mapped = (invert * (1 - mapped) + (1 - invert) * mapped).clamp(0, 1)
    return (mapped.reshape(x.shape) * span + low).to(x.dtype)


class RandomShallowConv(IntensityAugmentationBase2D):
    """`random_shallow_conv` as a kornia intensity augmentation (applied with probability ``p`` per image)."""

    def __init__(self, layers: int = 4, width: int = 2, kernel_sizes: Sequence[int] = (1, 3), p: float = 0.5) -> None:
        super().__init__(p=p)
        if layers < 1 or width < 1 or not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ConfigError("gin: layers and width must be >= 1 and kernel_sizes odd positive integers")
        self.layers, self.width, self.kernel_sizes = layers, width, tuple(kernel_sizes)

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        return random_shallow_conv(input, self.layers, self.width, self.kernel_sizes)


class RandomBezierCurve(IntensityAugmentationBase2D):
    """`bezier_curve` as a kornia intensity augmentation (applied with probability ``p`` per image)."""

    def __init__(self, invert_p: float = 0.5, p: float = 0.5) -> None:
        super().__init__(p=p)
        if not 0 <= invert_p <= 1:
            raise ConfigError(f"bezier: invert_p must be in [0, 1], got {invert_p}")
        self.invert_p = invert_p

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        return bezier_curve(input, self.invert_p)


def gin(layers: int = 4, width: int = 2, kernel_sizes: Sequence[int] = (1, 3), p: float = 0.5) -> RandomShallowConv:
    """Random shallow convolutional intensity remapping (GIN), with probability ``p`` per image."""
    return RandomShallowConv(layers, width, kernel_sizes, p)


def bezier(invert_p: float = 0.5, p: float = 0.5) -> RandomBezierCurve:
    """Random Bezier intensity curve, inverted with probability ``invert_p``, with probability ``p`` per image."""
    return RandomBezierCurve(invert_p, p)


@hookimpl
def register_augmentations(register) -> None:
    register("gin", gin)
    register("bezier", bezier)
