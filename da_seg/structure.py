"""Structure-consistency losses: compare an image with its translation across modalities, where intensities differ.

A CycleGAN's cycle loss only asks that the translation can be undone; a generator may still move edges, draw bone
under dark MR muscle or flatten soft tissue as long as the inverse generator learns to undo it. These losses compare
a modality-independent description of local structure between the source image and its translation (registered in
`LOSSES`; the CycleGAN's ``structure_loss``):

- ``mind``: the modality independent neighbourhood descriptor (MIND; Heinrich et al. 2012, Medical Image Analysis),
  in 2D with the four nearest neighbours at distance ``dilation`` and Gaussian patch weights; as used for MR->CT
  synthesis by the structure-constrained CycleGAN (Yang et al. 2018). Mean absolute descriptor difference.
- ``ngf``: normalised gradient fields (Haber and Modersitzki 2006): ``1 - (n_x . n_y)^2`` averaged over pixels, with
  ``n = grad / sqrt(|grad|^2 + eps^2)``; blind to the sign of an edge, so inverted contrast costs nothing.

Both are computed per channel (a 2.5D stack's slices are compared slice by slice) in float32 under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da_seg.errors import ConfigError
from da_seg.hookspecs import hookimpl
from da_seg.losses import gaussian_blur

_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) unit offsets, scaled by the dilation


def _per_channel(x: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B*C, 1, H, W)`` float32."""
    if x.ndim != 4:
        raise ValueError(f"a structure loss takes (B, C, H, W) images, got shape {tuple(x.shape)}")
    return x.float().reshape(-1, 1, *x.shape[-2:])


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """``x`` moved so that pixel p holds ``x[p + (dy, dx)]``, edges replicated."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def mind_descriptor(x: Tensor, dilation: int = 2, sigma: float = 1.0) -> Tensor:
    """MIND in 2D: ``exp(-D(p, r) / V(p))`` over the four neighbours r, normalised to a maximum of 1 per pixel.

    ``D(p, r)`` is the Gaussian-weighted (``sigma``; 0: a single pixel) patch sum of squared differences between the
    image and the image shifted by r; ``V(p)`` is its mean over r, clamped to [0.001, 1000] times its image mean so
    that flat regions do not divide by zero (as in Heinrich's reference code).

    Shape:
        ``(B, C, H, W)`` -> ``(B*C, 4, H, W)``.
    """
    x = _per_channel(x)
    distances = torch.cat([(x - _shift(x, dy * dilation, dx * dilation)) ** 2 for dy, dx in _NEIGHBOURS], dim=1)
    if sigma > 0:
        size = 2 * round(2 * sigma) + 1
        pad = size // 2
        distances = gaussian_blur(F.pad(distances, (pad, pad, pad, pad), mode="replicate"), size, sigma)
    variance = distances.mean(dim=1, keepdim=True)
    mean = variance.mean(dim=(2, 3), keepdim=True)
    variance = torch.minimum(torch.maximum(variance, 1e-3 * mean), 1e3 * mean).clamp_min(1e-12)
    descriptor = torch.exp(-distances / variance)
    return descriptor / descriptor.amax(dim=1, keepdim=True)


class MINDLoss(nn.Module):
    """Mean absolute difference of the MIND descriptors of two images (`mind_descriptor`)."""

    def __init__(self, dilation: int = 2, sigma: float = 1.0) -> None:
        super().__init__()
        if dilation < 1 or sigma < 0:
            raise ConfigError(f"mind: dilation must be >= 1 and sigma >= 0, got {dilation}, {sigma}")
        self.dilation, self.sigma = dilation, sigma

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(prediction.device.type, enabled=False):
            a = mind_descriptor(prediction, self.dilation, self.sigma)
            b = mind_descriptor(target, self.dilation, self.sigma)
            return (a - b).abs().mean()


def normalised_gradients(x: Tensor, eps: float = 0.05) -> Tensor:
    """``grad / sqrt(|grad|^2 + eps^2)`` by central differences (edges replicated).

    Shape:
        ``(B, C, H, W)`` -> ``(B*C, 2, H, W)`` (d/dy, d/dx).
    """
    x = _per_channel(x)
    gy = (_shift(x, 1, 0) - _shift(x, -1, 0)) / 2
    gx = (_shift(x, 0, 1) - _shift(x, 0, -1)) / 2
    grad = torch.cat([gy, gx], dim=1)
    return grad / torch.sqrt((grad**2).sum(dim=1, keepdim=True) + eps**2)


class NGFLoss(nn.Module):
    """``mean(1 - (n_x . n_y)^2)`` of the normalised gradient fields of two images (`normalised_gradients`)."""

    def __init__(self, eps: float = 0.05) -> None:
        super().__init__()
        if eps <= 0:
            raise ConfigError(f"ngf: eps must be > 0, got {eps}")
        self.eps = eps

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(prediction.device.type, enabled=False):
            a = normalised_gradients(prediction, self.eps)
            b = normalised_gradients(target, self.eps)
            return (1 - (a * b).sum(dim=1) ** 2).mean()


@hookimpl
def register_losses(register) -> None:
    register("mind", MINDLoss)
    register("ngf", NGFLoss)
