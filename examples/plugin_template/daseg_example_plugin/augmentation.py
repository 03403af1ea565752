"""An augmentation: a factory returning a ``kornia.augmentation`` module (or a list of them)."""

from __future__ import annotations

import kornia.augmentation as K
from torch import nn


def example_blur(max_sigma: float = 1.0, p: float = 0.5) -> nn.Module:
    """Random Gaussian blur of the image (an intensity op: kornia leaves masks alone)."""
    return K.RandomGaussianBlur(kernel_size=(5, 5), sigma=(0.1, max_sigma), p=p)
